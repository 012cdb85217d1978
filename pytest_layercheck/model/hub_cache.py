"""Resolve a hub id (``org/name``, optionally ``org/name@revision``) to a folder in the local Hugging Face cache.

Nothing is downloaded: a model that is not in the cache is an error that says how to fetch it. The cache
layout is huggingface_hub's::

    <cache>/models--<org>--<name>/refs/<branch>          a commit hash
    <cache>/models--<org>--<name>/snapshots/<commit>/    config.json, tokenizer files, weights (symlinks to blobs/)

``<cache>`` is ``$HF_HUB_CACHE``, else ``$HUGGINGFACE_HUB_CACHE`` (the older name), else ``$HF_HOME/hub``,
else ``$XDG_CACHE_HOME/huggingface/hub``, else ``~/.cache/huggingface/hub``: the rules huggingface_hub
applies, read at every call (so a test or a CI step can point it elsewhere). A snapshot counts as a model
only when its config, tokenizer and weights are all there and readable: ``huggingface-cli download`` of a
single file, or an interrupted download, leaves a snapshot that would otherwise fail later with a less
helpful message.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pytest_layercheck.core.errors import ModelLoadError

__all__ = ["HubModel", "hub_cache_dir", "looks_like_hub_id", "resolve_hub_model", "cached_models"]

#: ``org/name`` or ``org/name@revision``; the characters the hub allows in ids.
_HUB_ID = re.compile(
    r"^(?P<org>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)"
    r"(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?$"
)
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


@dataclass(frozen=True)
class HubModel:
    """A hub id found in the local cache."""

    repo_id: str
    revision: str
    commit: str
    folder: Path

    @property
    def is_adapter(self) -> bool:
        return (self.folder / "adapter_config.json").is_file()


def hub_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The hub cache folder under huggingface_hub's environment rules (see the module docstring)."""
    env = os.environ if env is None else env
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "huggingface" / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def looks_like_hub_id(spec: str | os.PathLike[str]) -> bool:
    """True for ``org/name`` (or ``org/name@rev``) that is not an existing local path."""
    text = os.fspath(spec)
    if text.startswith((".", "/", "~")) or Path(text).expanduser().exists():
        return False
    return _HUB_ID.match(text) is not None


def _fetch_hint(repo_id: str, revision: str | None) -> str:
    rev = f" --revision {revision}" if revision else ""
    return (
        f"fetch it once, where the network is allowed: `huggingface-cli download {repo_id}{rev}` (or "
        f"`hf download {repo_id}{rev}`), into the same cache (HF_HOME / HF_HUB_CACHE); or save the model to "
        "a folder (model.save_pretrained(...)) and pass the folder. pytest-layercheck never downloads models"
    )


def cached_models(cache: Path | None = None) -> list[str]:
    """Hub ids of the models in the cache (``models--org--name`` folders), sorted."""
    cache = hub_cache_dir() if cache is None else cache
    if not cache.is_dir():
        return []
    return sorted(p.name[len("models--") :].replace("--", "/", 1) for p in cache.glob("models--*--*") if p.is_dir())


def _commit_for(repo: Path, revision: str) -> str | None:
    """The commit a branch/tag ref points at, or the revision itself when it is a cached commit hash."""
    ref = repo / "refs" / revision
    if ref.is_file():
        try:
            text = ref.read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text if _COMMIT.match(text) else None
    if _COMMIT.match(revision) and (repo / "snapshots" / revision).is_dir():
        return revision
    if len(revision) >= 7 and re.fullmatch(r"[0-9a-f]+", revision):  # a short hash
        matches = [p.name for p in (repo / "snapshots").glob(f"{revision}*") if p.is_dir()]
        if len(matches) == 1:
            return matches[0]
    return None


def _readable(path: Path) -> bool:
    """A file that exists and whose symlink (into blobs/) resolves: a partial download leaves dangling links."""
    try:
        return path.is_file() and path.stat().st_size > 0
    except OSError:
        return False


def _missing_parts(folder: Path) -> list[str]:
    """What a loadable model folder lacks: config, tokenizer, weights (and index shards)."""
    if (folder / "adapter_config.json").is_file():
        weights = [f for f in ("adapter_model.safetensors", "adapter_model.bin") if _readable(folder / f)]
        return [] if weights else ["adapter weights (adapter_model.safetensors)"]
    missing = []
    if not _readable(folder / "config.json"):
        missing.append("config.json")
    if not any(_readable(folder / f) for f in TOKENIZER_FILES):
        missing.append("the tokenizer (tokenizer.json or tokenizer.model)")
    weights = [f for f in WEIGHT_FILES if _readable(folder / f)]
    if not weights:
        missing.append("the weights (model.safetensors or an index of shards)")
    for index in (f for f in weights if f.endswith(".index.json")):
        try:
            shards = set(json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            missing.append(f"a readable {index}")
            continue
        absent = sorted(s for s in shards if not _readable(folder / s))
        if absent:
            missing.append(f"{len(absent)} of {len(shards)} weight shards ({absent[0]}, ...)")
    return missing


def resolve_hub_model(spec: str, *, revision: str | None = None, cache: Path | None = None) -> HubModel:
    """The cached snapshot folder of hub id ``spec`` (``org/name`` or ``org/name@revision``), offline.

    ``revision`` (a branch, tag or commit hash) defaults to the one in the spec, else ``main``. Raises
    :class:`ModelLoadError` naming the cache and the command that fetches the model when it is not cached
    or is incomplete.
    """
    match = _HUB_ID.match(spec)
    if match is None:
        raise ModelLoadError(
            f"{spec!r} is not a hub id of the form org/name or org/name@revision",
            "pass a local folder, a .gguf file, 'default', or a hub id such as HuggingFaceTB/SmolLM2-135M",
        )
    repo_id = f"{match['org']}/{match['name']}"
    revision = revision or match["revision"]
    cache = hub_cache_dir() if cache is None else cache
    repo = cache / f"models--{match['org']}--{match['name']}"
    if not repo.is_dir():
        known = cached_models(cache)
        close = difflib.get_close_matches(repo_id, known, n=3, cutoff=0.6)
        also = (
            f" Cached models with similar names: {', '.join(close)}."
            if close
            else (f" The cache holds {len(known)} model(s)." if known else " The cache is empty or absent.")
        )
        raise ModelLoadError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({cache}).{also}", _fetch_hint(repo_id, revision)
        )
    wanted = revision or "main"
    commit = _commit_for(repo, wanted)
    if commit is None and revision is None:
        snapshots = sorted(p.name for p in (repo / "snapshots").glob("*") if p.is_dir())
        if len(snapshots) == 1:  # fetched by commit only, no refs/main: the one snapshot is unambiguous
            commit = snapshots[0]
        elif snapshots:
            raise ModelLoadError(
                f"model {repo_id!r} has {len(snapshots)} cached snapshots ({', '.join(s[:10] for s in snapshots)}) "
                f"and no refs/main in {repo}, so which one to use is ambiguous",
                f"name the revision: {repo_id}@<commit>",
            )
    if commit is None or not (repo / "snapshots" / commit).is_dir():
        raise ModelLoadError(
            f"revision {wanted!r} of model {repo_id!r} is not in the local Hugging Face cache ({repo})",
            _fetch_hint(repo_id, revision),
        )
    folder = repo / "snapshots" / commit
    missing = _missing_parts(folder)
    if missing:
        raise ModelLoadError(
            f"the cached snapshot of {repo_id!r} ({folder}) is incomplete: it lacks {'; '.join(missing)}",
            "complete the download: " + _fetch_hint(repo_id, revision),
        )
    return HubModel(repo_id=repo_id, revision=wanted, commit=commit, folder=folder)
