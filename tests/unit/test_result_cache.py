"""The result cache as untrusted input: signed, strictly decoded, complete key, stored identity checked."""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import warnings
from pathlib import Path

import pytest
import torch
from tiny_models import tiny_model, tiny_tokenizer
from trained_tiny import write_fact_suite

from pytest_layercheck.core.errors import ConfigError
from pytest_layercheck.data.profile_data import INTACT, Evaluation, SuiteInfo
from pytest_layercheck.evaluation.profiler import build_profile
from pytest_layercheck.evaluation.result_cache import (
    CacheEntryWarning,
    ResultCache,
    _sign,
    signing_key,
)
from pytest_layercheck.evaluation.service import cache_identity
from pytest_layercheck.evaluation.settings import ProfileSettings
from pytest_layercheck.model import fingerprint
from pytest_layercheck.model.loading import LoadedModel

IDENTITY = {
    "fingerprint": "sha256:abc",
    "suite_hash": "sha256:def",
    "protocol": "mc_text",
    "ablation": INTACT,
    "items": ["a", "b", "c", "d"],
    "seed": 0,
}
EVALUATION = Evaluation(
    "facts",
    "mc_text",
    INTACT,
    (),
    {
        "acc": (1.0, 0.0, 1.0, 1.0),
        "acc_norm": (1.0, 0.0, 0.0, 1.0),
        "p_correct": (0.9, 0.2, 0.6, 0.7),
        "margin": (2.3, -1.1, 0.4, 0.9),
    },
)


@pytest.fixture(autouse=True)
def private_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LAYERCHECK_CACHE_SECRET", raising=False)
    monkeypatch.delenv("LAYERCHECK_CACHE_MODE", raising=False)


@pytest.fixture
def cache(tmp_path: Path) -> ResultCache:
    return ResultCache(tmp_path / "results")


def _rewrite(cache: ResultCache, identity: dict, edit, *, resign: bool = True) -> Path:
    """Edit the stored entry of ``identity``; re-sign it (a writer holding the key) unless told not to."""
    path = cache.path_for(identity)
    payload = json.loads(path.read_text())
    edit(payload)
    if resign and "signature" in payload:
        with contextlib.suppress(ValueError):  # NaN cannot be signed canonically; the reader refuses it for that
            payload["signature"] = _sign(cache.key_bytes, payload)
    path.write_text(json.dumps(payload))
    return path


def test_round_trip_counts_hits_and_misses(cache: ResultCache) -> None:
    assert cache.get(IDENTITY) is None
    cache.put(IDENTITY, EVALUATION)
    assert cache.get(IDENTITY) == EVALUATION
    assert (cache.hits, cache.misses, cache.writes, cache.rejected) == (1, 1, 1, [])
    assert cache.summary() == "1 from cache, 1 computed"


def _set_outcome(value: object):
    return lambda payload: payload["outcomes"]["acc"].__setitem__(1, value)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set_outcome(math.nan), "not finite"),
        (_set_outcome(2.0), "not a 0/1 outcome"),
        (_set_outcome(True), "not a 0/1 outcome"),
        (lambda p: p["outcomes"].__setitem__("acc", "1x11"), "only '0' and '1'"),
        (lambda p: p["outcomes"]["acc"].pop(), "3 outcomes for 4 items"),
        (lambda p: p["outcomes"].pop("acc"), "lack the metric 'acc'"),
        (lambda p: p["outcomes"].pop("p_correct"), "lack the metric 'p_correct'"),
        (lambda p: p["outcomes"]["p_correct"].__setitem__(0, 1.5), "outside [0, 1], the range of p_correct"),
        (lambda p: p["outcomes"]["margin"].__setitem__(0, math.inf), "not finite"),
        (lambda p: p.__setitem__("extra", 1), "unknown field(s) 'extra'"),
        (lambda p: p.pop("removed_layers"), "missing field(s) 'removed_layers'"),
        (lambda p: p.__setitem__("format", True), "entry format True"),
        (lambda p: p.__setitem__("ablation", "skip=1"), "not the ablation asked for"),
        (lambda p: p["identity"].__setitem__("items", ["a", "b", "c", "e"]), "stored for another evaluation"),
    ],
)
def test_a_bad_entry_is_a_reported_miss_even_when_signed(cache: ResultCache, edit, reason: str) -> None:
    cache.put(IDENTITY, EVALUATION)
    path = _rewrite(cache, IDENTITY, edit)
    with pytest.warns(CacheEntryWarning, match="recomputed"):
        assert cache.get(IDENTITY) is None
    assert cache.hits == 0 and len(cache.rejected) == 1
    assert cache.rejected[0][0] == path and reason in cache.rejected[0][1], cache.rejected
    assert "1 cache entries rejected" in cache.summary()


@pytest.mark.parametrize(
    "edit", [_set_outcome(1.0), lambda p: p.__setitem__("signature", "0" * 64), lambda p: p.pop("signature")]
)
def test_a_forged_entry_is_rejected(cache: ResultCache, edit) -> None:
    """Well-formed but not signed with this cache's key: an edited verdict, or a planted file."""
    cache.put(IDENTITY, EVALUATION)
    _rewrite(cache, IDENTITY, edit, resign=False)
    with pytest.warns(CacheEntryWarning):
        assert cache.get(IDENTITY) is None
    assert "signature" in cache.rejected[0][1] or "missing field(s) 'signature'" in cache.rejected[0][1]


def test_an_entry_moved_to_another_key_is_rejected(cache: ResultCache) -> None:
    other = {**IDENTITY, "ablation": "skip=1"}
    cache.put(IDENTITY, EVALUATION)
    target = cache.path_for(other)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(cache.path_for(IDENTITY).read_bytes())
    with pytest.warns(CacheEntryWarning, match="stored for another evaluation"):
        assert cache.get(other) is None


def test_entries_of_the_old_unsigned_format_are_misses(cache: ResultCache) -> None:
    path = cache.path_for(IDENTITY)
    path.parent.mkdir(parents=True)
    path.write_text(
        json.dumps(
            {
                "identity": IDENTITY,
                "suite": "facts",
                "protocol": "mc_text",
                "ablation": INTACT,
                "removed_layers": [],
                "outcomes": {"acc": [1, 1, 1, 1]},
            }
        )
    )
    with pytest.warns(CacheEntryWarning, match="entry format None"):
        assert cache.get(IDENTITY) is None


def test_warnings_stop_after_three_but_every_rejection_is_counted(cache: ResultCache) -> None:
    identities = [{**IDENTITY, "seed": i} for i in range(6)]
    for identity in identities:
        cache.put(identity, EVALUATION)
        _rewrite(cache, identity, lambda p: p.__setitem__("format", 1))
    with pytest.warns(CacheEntryWarning) as record:
        assert all(cache.get(identity) is None for identity in identities)
    assert len(record) == 4 and "layercheck cache verify" in str(record[-1].message)
    assert len(cache.rejected) == 6


def test_unwritable_outcomes_are_not_cached(cache: ResultCache) -> None:
    bad = Evaluation("facts", "mc_text", INTACT, (), {"acc": (1.0, math.nan, 1.0, 1.0)})
    with pytest.warns(CacheEntryWarning, match="not caching"):
        cache.put(IDENTITY, bad)
    assert not cache.path_for(IDENTITY).exists()


def test_a_failed_write_costs_the_cache_not_the_run(cache: ResultCache, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_layercheck.core import atomic

    def full(*_: object, **__: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.warns(CacheEntryWarning, match="No space left on device"):
        cache.put(IDENTITY, EVALUATION)
    monkeypatch.undo()
    assert cache.writes == 0 and cache.get(IDENTITY) is None
    assert list(cache.folder.rglob("*.tmp")) == []


def test_readonly_mode_reads_but_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ResultCache(tmp_path / "results").put(IDENTITY, EVALUATION)
    monkeypatch.setenv("LAYERCHECK_CACHE_MODE", "read-only")
    readonly = ResultCache(tmp_path / "results")
    assert readonly.mode == "readonly" and readonly.get(IDENTITY) == EVALUATION
    readonly.put({**IDENTITY, "seed": 1}, EVALUATION)
    assert not readonly.path_for({**IDENTITY, "seed": 1}).exists()
    assert readonly.summary().endswith("(cache readonly)")


def test_off_mode_ignores_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ResultCache(tmp_path / "results").put(IDENTITY, EVALUATION)
    monkeypatch.setenv("LAYERCHECK_CACHE_MODE", "off")
    off = ResultCache(tmp_path / "results")
    assert off.get(IDENTITY) is None and off.misses == 1
    assert ResultCache(tmp_path / "results", enabled=False).mode == "off"


def test_a_mistyped_mode_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAYERCHECK_CACHE_MODE", "read_only_please")
    with pytest.raises(ConfigError, match="readwrite, readonly, off"):
        ResultCache(tmp_path)


def test_the_key_lives_outside_the_cache_and_is_private(tmp_path: Path) -> None:
    key, source = signing_key()
    assert source == str(tmp_path / "config" / "pytest-layercheck" / "cache-key")
    assert stat.S_IMODE(os.stat(source).st_mode) == 0o600
    assert signing_key() == (key, source)  # made once, then reused


def test_a_shared_secret_lets_machines_share_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAYERCHECK_CACHE_SECRET", "ci-secret-of-a-long-enough-length")
    ResultCache(tmp_path / "results").put(IDENTITY, EVALUATION)
    assert ResultCache(tmp_path / "results").get(IDENTITY) == EVALUATION
    monkeypatch.setenv("LAYERCHECK_CACHE_SECRET", "another-secret-of-the-same-length")
    with pytest.warns(CacheEntryWarning, match="signature"):
        assert ResultCache(tmp_path / "results").get(IDENTITY) is None


# --------------------------------------------------------------------------------------------------
# The key is complete


def _loaded(model: torch.nn.Module, tokenizer=None) -> LoadedModel:
    return LoadedModel(model, tokenizer or tiny_tokenizer(), "tiny", "tiny", "test", torch.device("cpu"), torch.float32)


INFO = SuiteInfo("facts", "knowledge", "sha256:suite", "mc_text", ("a", "b", "c", "d"), sweep_items=2)


def test_identity_covers_tokenizer_generation_config_chat_template_and_code(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("llama", layers=4)
    base = cache_identity(_loaded(model), INFO, INTACT, 0)
    assert set(base) >= {
        "fingerprint",
        "tokenizer",
        "chat_template",
        "generation_config",
        "suite_hash",
        "protocol",
        "ablation",
        "items",
        "dtype",
        "device",
        "seed",
        "versions",
        "scoring_code",
    }
    assert (
        cache_identity(_loaded(model, tiny_tokenizer(add_bos=True)), INFO, INTACT, 0)["tokenizer"] != base["tokenizer"]
    )
    templated = tiny_tokenizer()
    templated.chat_template = "{{ messages }}"
    changed = cache_identity(_loaded(model, templated), INFO, INTACT, 0)
    assert changed["chat_template"] != base["chat_template"] and changed["tokenizer"] != base["tokenizer"]
    model.generation_config.repetition_penalty = 1.3
    assert cache_identity(_loaded(model), INFO, INTACT, 0)["generation_config"] != base["generation_config"]
    monkeypatch.setattr(fingerprint, "SCORING_CODE", ("scoring",))
    fingerprint.code_fingerprint.cache_clear()
    try:
        assert cache_identity(_loaded(model), INFO, INTACT, 0)["scoring_code"] != base["scoring_code"]
    finally:
        monkeypatch.undo()
        fingerprint.code_fingerprint.cache_clear()
    assert fingerprint.code_fingerprint() == base["scoring_code"]
    # Ablations score the first sweep_items items; the key names exactly the items scored.
    assert base["items"] == ["a", "b", "c", "d"]
    assert cache_identity(_loaded(model), INFO, "skip=1", 0)["items"] == ["a", "b"]


def test_tokenizer_files_are_hashed(tmp_path: Path) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.save_pretrained(tmp_path / "tok")
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path / "tok")
    before = fingerprint.tokenizer_fingerprint(loaded)
    config = tmp_path / "tok" / "tokenizer_config.json"
    config.write_text(config.read_text().replace("}", ', "note": "edited"}', 1))
    assert fingerprint.tokenizer_fingerprint(loaded) != before


def test_a_swapped_tokenizer_is_not_served_from_the_cache(tmp_path: Path) -> None:
    """The issue's reproduction: same weights, a tokenizer that adds BOS; every evaluation recomputed."""
    suite = write_fact_suite(tmp_path / "facts.yaml", n=8)
    settings = ProfileSettings(suites=(str(suite),), limit=None)
    model = tiny_model("llama", layers=4)
    first = build_profile(_loaded(model), settings, cache=ResultCache(tmp_path / "results"))
    again = ResultCache(tmp_path / "results")
    build_profile(_loaded(model), settings, cache=again)
    assert (again.hits, again.misses) == (5, 0)
    swapped = ResultCache(tmp_path / "results")
    other = build_profile(_loaded(model, tiny_tokenizer(add_bos=True)), settings, cache=swapped)
    assert (swapped.hits, swapped.misses) == (0, 5)
    assert any(first.evaluations[k].outcomes != other.evaluations[k].outcomes for k in first.evaluations)


def test_continuation_log_likelihoods_are_cached_and_read_back(cache: ResultCache) -> None:
    """A continuation suite's per-item log-likelihoods are cached like 0/1 outcomes (they used to be refused
    as "not a 0/1 outcome", so such suites were recomputed on every run)."""
    identity = {**IDENTITY, "protocol": "continuation"}
    evaluation = Evaluation(
        "facts",
        "continuation",
        INTACT,
        (),
        {"loglikelihood": (-0.5, -12.25, -3.0, 0.0), "exact_match": (1.0, 0.0, 0.0, 1.0)},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "not caching" warning
        cache.put(identity, evaluation)
    assert cache.get(identity) == evaluation and cache.writes == 1


def test_a_positive_log_likelihood_is_refused(cache: ResultCache) -> None:
    identity = {**IDENTITY, "protocol": "continuation"}
    with pytest.warns(CacheEntryWarning, match=r"outside \[-inf, 0\], the range of loglikelihood"):
        cache.put(
            identity,
            Evaluation(
                "facts",
                "continuation",
                INTACT,
                (),
                {"loglikelihood": (0.5, -1.0, -1.0, -1.0), "exact_match": (1.0, 0.0, 0.0, 1.0)},
            ),
        )
    assert cache.writes == 0
