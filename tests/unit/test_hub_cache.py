"""Hub ids resolved from a local Hugging Face cache laid out as huggingface_hub writes it; nothing downloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny_models import tiny_model, tiny_tokenizer

from pytest_layercheck.core.errors import ModelLoadError
from pytest_layercheck.model.hub_cache import cached_models, hub_cache_dir, looks_like_hub_id, resolve_hub_model
from pytest_layercheck.model.loading import load_model

COMMIT = "a" * 40
OTHER = "b" * 40


def cache_model(
    cache: Path, repo_id: str, commit: str = COMMIT, files: dict[str, bytes] | None = None, ref: str | None = "main"
) -> Path:
    """A ``models--org--name`` entry: blobs, a snapshot of symlinks to them, and a ref."""
    org, name = repo_id.split("/")
    repo = cache / f"models--{org}--{name}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    files = files if files is not None else {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"x"}
    for index, (filename, data) in enumerate(files.items()):
        blob = repo / "blobs" / f"{commit[:8]}{index:032d}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / filename).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, (snapshot / filename).parent), snapshot / filename)
    if ref:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


def test_cache_folder_follows_huggingface_hub_rules(tmp_path: Path) -> None:
    home = Path("~").expanduser()
    assert hub_cache_dir({}) == home / ".cache" / "huggingface" / "hub"
    assert hub_cache_dir({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "huggingface" / "hub"
    assert hub_cache_dir({"HF_HOME": str(tmp_path / "h"), "XDG_CACHE_HOME": "/x"}) == tmp_path / "h" / "hub"
    assert hub_cache_dir({"HUGGINGFACE_HUB_CACHE": str(tmp_path / "old"), "HF_HOME": "/h"}) == tmp_path / "old"
    assert hub_cache_dir({"HF_HUB_CACHE": str(tmp_path / "c"), "HUGGINGFACE_HUB_CACHE": "/o"}) == tmp_path / "c"


def test_hub_ids_are_told_from_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert looks_like_hub_id("HuggingFaceTB/SmolLM2-135M") and looks_like_hub_id("org/name@v1.0")
    assert not looks_like_hub_id("./org/name") and not looks_like_hub_id("/abs/path")
    assert not looks_like_hub_id("~/models/x") and not looks_like_hub_id("default")
    assert not looks_like_hub_id("a/b/c")
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert not looks_like_hub_id("org/name")  # an existing folder is a path


def test_main_ref_a_branch_a_commit_and_a_short_hash_resolve(tmp_path: Path) -> None:
    snapshot = cache_model(tmp_path, "org/model")
    other = cache_model(tmp_path, "org/model", commit=OTHER, ref="dev")
    found = resolve_hub_model("org/model", cache=tmp_path)
    assert (found.repo_id, found.revision, found.commit, found.folder) == ("org/model", "main", COMMIT, snapshot)
    assert resolve_hub_model("org/model@dev", cache=tmp_path).folder == other
    assert resolve_hub_model("org/model", revision=OTHER, cache=tmp_path).folder == other
    assert resolve_hub_model(f"org/model@{OTHER[:10]}", cache=tmp_path).commit == OTHER
    assert cached_models(tmp_path) == ["org/model"]


def test_a_single_snapshot_without_refs_is_used(tmp_path: Path) -> None:
    snapshot = cache_model(tmp_path, "org/model", ref=None)
    assert resolve_hub_model("org/model", cache=tmp_path).folder == snapshot
    cache_model(tmp_path, "org/model", commit=OTHER, ref=None)
    with pytest.raises(ModelLoadError, match="2 cached snapshots .* ambiguous") as info:
        resolve_hub_model("org/model", cache=tmp_path)
    assert "org/model@<commit>" in str(info.value)


def test_an_uncached_model_says_how_to_fetch_it_and_names_similar_ones(tmp_path: Path) -> None:
    cache_model(tmp_path, "HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(ModelLoadError) as info:
        resolve_hub_model("HuggingFaceTB/SmolLM2-135M", cache=tmp_path)
    message = str(info.value)
    assert f"not in the local Hugging Face cache ({tmp_path})" in message
    assert "similar names: HuggingFaceTB/SmolLM2-135M-Instruct" in message
    assert "huggingface-cli download HuggingFaceTB/SmolLM2-135M" in message and "never downloads" in message
    with pytest.raises(ModelLoadError, match="revision 'v2' of model 'HuggingFaceTB/SmolLM2-135M-Instruct' is not"):
        resolve_hub_model("HuggingFaceTB/SmolLM2-135M-Instruct@v2", cache=tmp_path)
    with pytest.raises(ModelLoadError, match="The cache is empty or absent"):
        resolve_hub_model("org/x", cache=tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="not a hub id"):
        resolve_hub_model("just-a-name", cache=tmp_path)


def test_incomplete_snapshots_are_refused_with_what_is_missing(tmp_path: Path) -> None:
    cache_model(tmp_path, "org/config-only", files={"config.json": b"{}"})
    with pytest.raises(ModelLoadError, match="incomplete: it lacks the tokenizer .*; the weights") as info:
        resolve_hub_model("org/config-only", cache=tmp_path)
    assert "complete the download: fetch it once" in str(info.value)
    snapshot = cache_model(tmp_path, "org/dangling")
    blob = (snapshot / "model.safetensors").resolve()
    blob.unlink()  # an interrupted download leaves a link to nothing
    with pytest.raises(ModelLoadError, match="lacks the weights"):
        resolve_hub_model("org/dangling", cache=tmp_path)
    index = json.dumps(
        {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    ).encode()
    cache_model(
        tmp_path,
        "org/sharded",
        files={
            "config.json": b"{}",
            "tokenizer.json": b"{}",
            "model.safetensors.index.json": index,
            "model-00001-of-00002.safetensors": b"x",
        },
    )
    with pytest.raises(ModelLoadError, match="1 of 2 weight shards \\(model-00002-of-00002.safetensors"):
        resolve_hub_model("org/sharded", cache=tmp_path)
    cache_model(tmp_path, "org/adapter", files={"adapter_config.json": b"{}", "adapter_model.safetensors": b"x"})
    assert resolve_hub_model("org/adapter", cache=tmp_path).is_adapter


def test_the_environment_picks_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_model(tmp_path / "home" / "hub", "org/model")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert resolve_hub_model("org/model").commit == COMMIT


def test_a_resolved_snapshot_loads_as_a_model_folder(tmp_path: Path) -> None:
    """A tiny model written into the cache layout (files as symlinks into blobs/) loads from the snapshot."""
    saved = tmp_path / "saved"
    tiny_model("llama", layers=2).save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    files = {p.name: p.read_bytes() for p in saved.iterdir() if p.is_file()}
    cache_model(tmp_path / "cache", "tiny-org/tiny-llama", files=files)
    found = resolve_hub_model("tiny-org/tiny-llama", cache=tmp_path / "cache")
    loaded = load_model(found.folder, device="cpu")
    assert loaded.num_layers == 2 and loaded.kind == "transformers"


def test_load_model_takes_a_cached_hub_id_and_refuses_an_uncached_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    saved = tmp_path / "saved"
    tiny_model("llama", layers=2).save_pretrained(saved)
    tiny_tokenizer().save_pretrained(saved)
    cache_model(tmp_path / "cache", "tiny-org/tiny-llama", files={p.name: p.read_bytes() for p in saved.iterdir()})
    loaded = load_model("tiny-org/tiny-llama", device="cpu")
    assert loaded.name == "tiny-org/tiny-llama" and loaded.num_layers == 2
    with pytest.raises(ModelLoadError, match="huggingface-cli download tiny-org/absent"):
        load_model("tiny-org/absent", device="cpu")


def test_an_adapter_trained_on_the_hub_smollm2_is_not_merged_onto_the_dequantised_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """'default' aliases the hub id, but its weights are a de-quantised Q4_1 copy: an adapter trained on the
    hub weights is refused unless those are cached, and the fix names the explicit opt-in."""
    pytest.importorskip("peft")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "base_model_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "r": 2,
                "target_modules": ["q_proj"],
            }
        )
    )
    with pytest.raises(ModelLoadError) as info:
        load_model(adapter, device="cpu")
    message = str(info.value)
    assert "de-quantised Q4_1 copy" in message and "--layercheck-adapter-base default" in message
