"""Fault injection, round 2, for the result cache, its signing key and the default-model folder.

Rows of the matrix run ``python -m pytest_layercheck.cli`` in a temporary folder, as a user would, and
assert the exit status, the message, that no traceback was printed and that nothing outside the cache
was touched; a few in-process checks pin what a subprocess cannot see (the key derivation, writes).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from fault_world import RECORDED, SUITE, assert_exit, entries, environment, fingerprint_of, layercheck, snapshot
from tiny_models import fake_default_model

from pytest_layercheck.core.errors import DefaultModelCacheError
from pytest_layercheck.data.profile_data import INTACT, Evaluation
from pytest_layercheck.evaluation.result_cache import CacheEntryWarning, CacheKeyError, ResultCache, signing_key
from pytest_layercheck.model import default_model


def _outside(folder: Path) -> Path:
    """A folder beside the cache, holding what prune used to take for entries and leftovers."""
    outside = folder / "outside"
    outside.mkdir()
    (outside / "precious.json").write_text('{"not": "a cache entry"}')
    (outside / ".precious.json.1234.tmp").write_text("a user's temporary file")
    (outside / "notes.txt").write_text("kept")
    return outside


# --------------------------------------------------------------------------------------------------
# Nothing inside the cache is followed


@pytest.mark.slow
def test_prune_and_verify_never_follow_a_symlink_out_of_the_cache(ws: Path) -> None:
    outside = _outside(ws)
    before = snapshot(outside)
    results = ws / "cache" / "results"
    total = len(entries(ws))
    shard_link = results / "ff"
    shard_link.symlink_to(outside)  # where a folder of entries belongs
    shard = next(p for p in results.iterdir() if p.is_dir() and not p.is_symlink())
    entry_link = shard / ("0" * 64 + ".json")
    entry_link.symlink_to(outside / "precious.json")
    dangling = shard / ("1" * 64 + ".json")
    dangling.symlink_to(ws / "nowhere.json")

    assert_exit(layercheck(ws, "cache", "show"), 0, f"entries {total + 3}")
    assert_exit(
        layercheck(ws, "cache", "verify"),
        2,
        f"bad {shard_link}: a symbolic link where a folder of entries",
        f"bad {entry_link}: a symbolic link; entries are never followed",
        f"bad {dangling}",
    )
    assert_exit(layercheck(ws, "cache", "prune", "--dry-run"), 0, f"would delete {shard_link}", "3 files to delete")
    assert snapshot(outside) == before
    assert_exit(
        layercheck(ws, "cache", "prune"), 0, f"deleted {shard_link}", f"deleted {entry_link}", "3 files deleted"
    )
    assert snapshot(outside) == before
    assert not any(os.path.lexists(p) for p in (shard_link, entry_link, dangling))  # the links themselves went
    assert_exit(layercheck(ws, "cache", "verify"), 0, f"{total} of {total} entries sound")

    shard_link.symlink_to(outside)
    entry_link.symlink_to(outside / "precious.json")
    assert_exit(layercheck(ws, "cache", "verify", "--delete"), 0, f"{total} of {total + 2} entries sound; 2 deleted")
    shard_link.symlink_to(outside)
    assert_exit(layercheck(ws, "cache", "prune", "--all"), 0, f"{total + 1} files deleted")
    assert snapshot(outside) == before
    assert not os.path.lexists(shard_link) and entries(ws) == {}


@pytest.mark.slow
def test_a_fifo_or_a_link_to_dev_zero_as_a_cache_entry_is_recomputed_not_a_hang(ws: Path) -> None:
    damaged = fingerprint_of(ws, "damaged")
    fifo, zero = [p for p, payload in entries(ws).items() if payload["identity"]["fingerprint"] == damaged][:2]
    fifo.unlink()
    os.mkfifo(fifo)
    zero.unlink()
    zero.symlink_to("/dev/zero")
    assert_exit(
        layercheck(ws, "cache", "verify", timeout=60),
        2,
        f"bad {fifo}: a FIFO, not a regular file",
        f"bad {zero}: a symbolic link; entries are never followed",
    )
    output = assert_exit(
        layercheck(ws, "profile", "damaged", *SUITE, *RECORDED, timeout=120),
        1,
        "regressed",
        "ignored result-cache entry",
        "a FIFO, not a regular file; only regular files are read",
        "a symbolic link; entries are never followed",
        "the evaluation is recomputed",
    )
    assert "2 cache entries rejected" in output
    for path in (fifo, zero):  # recomputed and written in place of the FIFO and the link
        assert stat.S_ISREG(path.lstat().st_mode), path
    total = len(entries(ws))
    assert_exit(layercheck(ws, "cache", "verify"), 0, f"{total} of {total} entries sound")


def test_a_shard_folder_swapped_for_a_link_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LAYERCHECK_CACHE_SECRET", raising=False)
    identity = {
        "fingerprint": "sha256:abc",
        "suite_hash": "sha256:def",
        "protocol": "mc_text",
        "ablation": INTACT,
        "items": ["a", "b"],
        "seed": 0,
    }
    cache = ResultCache(tmp_path / "results")
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "results").mkdir()
    cache.path_for(identity).parent.symlink_to(outside)
    with pytest.warns(CacheEntryWarning, match="is a symbolic link or not a folder; nothing inside the cache"):
        cache.put(identity, Evaluation("facts", "mc_text", INTACT, (), {"acc": (1.0, 0.0), "p_correct": (0.9, 0.2)}))
    assert list(outside.iterdir()) == [] and cache.writes == 0
    with pytest.warns(CacheEntryWarning, match="is a symbolic link or not a folder"):
        assert cache.get(identity) is None


# --------------------------------------------------------------------------------------------------
# The signing key


def _key_file(folder: Path) -> Path:
    return folder / "config" / "pytest-layercheck" / "cache-key"


@pytest.mark.slow
def test_a_key_file_that_is_not_hex_is_exit_2_naming_the_file_and_the_fix(ws: Path) -> None:
    key = _key_file(ws)
    key.write_text("this is not a key at all\n")
    output = assert_exit(
        layercheck(ws, "profile", "good", *SUITE, *RECORDED),
        2,
        f"the result-cache key file {key} is damaged: it must hold 64 hex digits",
        "How to fix: delete it; a new key is made on next use",
    )
    assert "not finite" not in output and "ignored result-cache entry" not in output
    assert key.read_text() == "this is not a key at all\n"  # left for the user to look at


@pytest.mark.slow
@pytest.mark.parametrize("mode", [0o644, 0o620, 0o604], ids=lambda mode: f"{mode:04o}")
def test_a_key_file_group_or_others_can_read_or_write_is_refused(ws: Path, mode: int) -> None:
    key = _key_file(ws)
    before = key.read_bytes()
    key.chmod(mode)
    assert_exit(
        layercheck(ws, "cache", "show"),
        2,
        f"the result-cache key file {key} has mode {mode:04o}",
        "group or others can read or change it",
        f"How to fix: `chmod 600 {key}`",
    )
    if mode == 0o644:  # the usual way it happens (a umask of 022 and a copied file); one profile run suffices
        assert_exit(layercheck(ws, "profile", "good", *SUITE, *RECORDED), 2, f"chmod 600 {key}")
    assert key.read_bytes() == before
    key.chmod(0o600)
    assert_exit(layercheck(ws, "cache", "show"), 0, f"key {key}")


@pytest.mark.slow
def test_a_short_cache_secret_is_refused_with_the_minimum_length(ws: Path) -> None:
    before = snapshot(ws / "cache")
    env = environment(ws, LAYERCHECK_CACHE_SECRET="hunter2")
    assert_exit(
        layercheck(ws, "profile", "good", *SUITE, *RECORDED, env=env),
        2,
        "$LAYERCHECK_CACHE_SECRET has 7 characters; at least 16 are needed",
        "How to fix: set it to a long random string",
        "secrets.token_hex(32)",
    )
    assert snapshot(ws / "cache") == before


def test_the_cache_secret_is_stretched_with_scrypt_and_fixed_documented_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "correct horse battery staple"
    monkeypatch.setenv("LAYERCHECK_CACHE_SECRET", secret)
    key, source = signing_key()
    assert source == "$LAYERCHECK_CACHE_SECRET"
    assert key == hashlib.scrypt(
        secret.encode(), salt=b"pytest-layercheck result-cache key v1", n=16384, r=8, p=1, dklen=32
    )
    assert key != hashlib.sha256(secret.encode()).digest()
    monkeypatch.setenv("LAYERCHECK_CACHE_SECRET", "x" * 15)
    with pytest.raises(CacheKeyError, match="at least 16"):
        signing_key()


# --------------------------------------------------------------------------------------------------
# The verified default-model folder holds exactly its manifest's files


@pytest.fixture
def default_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LAYERCHECK_CACHE_DIR", str(tmp_path / "cache"))
    return fake_default_model(tmp_path / "cache")


@pytest.mark.slow
def test_an_extra_special_tokens_map_in_the_default_model_folder_is_exit_2(
    tmp_path: Path, default_folder: Path
) -> None:
    assert_exit(layercheck(tmp_path, "info", "default"), 0)
    (default_folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "a"}))
    assert_exit(
        layercheck(tmp_path, "info", "default"),
        2,
        f"the cached default model in {default_folder} is "
        "damaged: it holds special_tokens_map.json, which is not among the files it was converted to",
        f"How to fix: delete {default_folder}",
    )


def test_the_default_model_folder_must_hold_exactly_the_manifest_files(default_folder: Path) -> None:
    default_model.verify_converted(default_folder)  # verified once, so only the listing is checked next time
    extra = default_folder / "special_tokens_map.json"
    extra.write_text("{}")
    with pytest.raises(DefaultModelCacheError, match="it holds special_tokens_map.json, which is not among") as info:
        default_model.verify_converted(default_folder)
    assert info.value.fix is not None and f"delete {default_folder}" in info.value.fix
    extra.unlink()
    (default_folder / "added").mkdir()
    with pytest.raises(DefaultModelCacheError, match="it holds added, which"):
        default_model.verify_converted(default_folder)
    (default_folder / "added").rmdir()
    default_model.verify_converted(default_folder)
    (default_folder / "config.json").unlink()
    with pytest.raises(DefaultModelCacheError, match="config.json is missing"):
        default_model.verify_converted(default_folder)


def test_a_manifest_naming_a_file_outside_the_folder_is_refused(default_folder: Path) -> None:
    manifest_path = default_folder / default_model.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["../outside.json"] = {"size": 2, "sha256": "0" * 64}
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DefaultModelCacheError, match="lists '../outside.json', which is not a file name"):
        default_model.verify_converted(default_folder)
