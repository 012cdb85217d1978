"""On-disk cache of evaluations, so re-running an unchanged profile costs almost nothing.

The cache is untrusted input: CI caches are shared and restored from elsewhere. So:

- the key is the sha256 of a complete identity (``profiler.cache_identity``: model weights and config,
  tokenizer, generation config, chat template, suite content, protocol, ablation, items, dtype, device
  type, seed, library versions, scoring-code hash), and the entry stores that identity, compared on read;
- every entry is signed (HMAC-SHA256) with a key that never lives in the cache folder: the secret in
  ``$LAYERCHECK_CACHE_SECRET`` (set it from a CI secret to share results between runners), or else a
  random key made once per user in ``$XDG_CONFIG_HOME/pytest-layercheck/cache-key``;
- every entry is decoded strictly (:func:`validation.decode_cache_entry`: 0/1 outcomes, as many as the
  items, nothing unknown).

An entry that fails any check is a miss: the evaluation is recomputed, and the entry is reported (a
``CacheEntryWarning`` and :attr:`ResultCache.rejected`). ``$LAYERCHECK_CACHE_MODE`` (or ``mode=``) is
``readwrite`` (default), ``readonly`` (use entries, write none: for a CI job that must not grow or
poison a shared cache) or ``off`` (ignore the cache entirely).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_layercheck.core.atomic import atomic_write_text
from pytest_layercheck.core.cache_dirs import results_dir
from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.data.profile_data import Evaluation
from pytest_layercheck.data.validation import CACHE_ENTRY_KEYS, SchemaError, decode_cache_entry, expect_object

#: Bumped when the entry format changes; entries of another format are misses.
CACHE_FORMAT = 2
MODE_ENV = "LAYERCHECK_CACHE_MODE"
SECRET_ENV = "LAYERCHECK_CACHE_SECRET"
MODES: tuple[str, ...] = ("readwrite", "readonly", "off")
#: Entries are a few kB; anything larger is not one of ours and is not read.
MAX_ENTRY_BYTES = 16 << 20
#: Rejected entries named one by one in warnings; later ones are only counted in ``rejected``.
WARN_LIMIT = 3


class CacheEntryWarning(UserWarning):
    """A cache entry was ignored (and its evaluation recomputed) because it failed a check."""


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".config") / "pytest-layercheck"


def resolve_mode(mode: str | None = None) -> str:
    """``mode``, else ``$LAYERCHECK_CACHE_MODE``, else ``readwrite``; a typo is a ConfigError."""
    text = (mode if mode is not None else os.environ.get(MODE_ENV, "")).strip().lower().replace("-", "")
    text = text or "readwrite"
    aliases = {"rw": "readwrite", "ro": "readonly", "ignore": "off", "none": "off"}
    text = aliases.get(text, text)
    if text not in MODES:
        raise ConfigError(f"unknown result-cache mode {mode if mode is not None else os.environ.get(MODE_ENV)!r}",
                          f"set {MODE_ENV} to one of {', '.join(MODES)}")
    return text


def signing_key() -> tuple[bytes, str]:
    """The HMAC key and where it came from: ``$LAYERCHECK_CACHE_SECRET``, else the per-user key file."""
    secret = os.environ.get(SECRET_ENV, "")
    if secret:
        return hashlib.sha256(secret.encode()).digest(), f"${SECRET_ENV}"
    path = config_dir() / "cache-key"
    with contextlib.suppress(FileNotFoundError):
        key = bytes.fromhex(path.read_text().strip())
        if len(key) == 32:
            return key, str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".cache-key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    try:
        os.link(staging, path)  # never replaces a key another process made first
    except FileExistsError:
        pass
    finally:
        os.unlink(staging)
    key = bytes.fromhex(path.read_text().strip())
    if len(key) != 32:
        raise ConfigError(f"the result-cache key file {path} is damaged", "delete it; a new key is made on next use")
    return key, str(path)


def _canonical(payload: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in payload.items() if k != "signature"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _sign(key: bytes, payload: Mapping[str, Any]) -> str:
    return hmac.new(key, _canonical(payload), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class EntryCheck:
    """What :meth:`ResultCache.check_file` found: ``problem`` is None for a sound entry."""

    path: Path
    problem: str | None
    identity: Mapping[str, Any] | None = None


class ResultCache:
    """Evaluations stored as small signed JSON files under ``<cache>/results/ab/abcdef….json``."""

    def __init__(self, folder: Path | None = None, enabled: bool = True, *, mode: str | None = None,
                 key: bytes | None = None) -> None:
        self.folder = Path(folder) if folder is not None else results_dir()
        self.mode = "off" if not enabled else resolve_mode(mode)
        self.hits = 0
        self.misses = 0
        self.writes = 0
        #: Evaluations another pytest-xdist worker of the same run computed (:mod:`.sharding`).
        self.shared = 0
        #: Entries ignored because they failed a check: (path, problem).
        self.rejected: list[tuple[Path, str]] = []
        self._key = key

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def writable(self) -> bool:
        return self.mode == "readwrite"

    @property
    def key_bytes(self) -> bytes:
        if self._key is None:
            self._key = signing_key()[0]
        return self._key

    @staticmethod
    def key(identity: Mapping[str, Any]) -> str:
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.json"

    def path_for(self, identity: Mapping[str, Any]) -> Path:
        return self._path(self.key(identity))

    # -------------------------------------------------------------------- read
    def _read(self, path: Path) -> dict[str, Any]:
        """The signed payload in ``path``; raises SchemaError (or OSError) with the problem."""
        size = path.stat().st_size
        if size > MAX_ENTRY_BYTES:
            raise SchemaError(f"{size} bytes, more than any entry ({MAX_ENTRY_BYTES})")
        try:
            payload = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"not valid JSON ({exc})") from None
        entry = expect_object(payload, "cache entry")
        if entry.get("format") != CACHE_FORMAT or isinstance(entry.get("format"), bool):
            raise SchemaError(f"entry format {entry.get('format')!r}, not {CACHE_FORMAT} (written by another version)")
        expect_object(entry, "cache entry", CACHE_ENTRY_KEYS)
        signature = entry["signature"]
        try:
            expected = _sign(self.key_bytes, entry)
        except ValueError:
            raise SchemaError("holds a number that is not finite") from None
        if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
            raise SchemaError("signature does not match this cache's key (edited, forged, or written with "
                              f"another key; share a key between machines with ${SECRET_ENV})")
        return entry

    def get(self, identity: Mapping[str, Any], *, count: bool = True) -> Evaluation | None:
        """The stored evaluation for ``identity``, or None (absent, cache off, or an entry that failed a check).

        ``count=False`` leaves :attr:`hits` and :attr:`misses` alone (the caller counts what it does
        with the answer); a rejected entry is reported either way.
        """
        if not self.enabled:
            self.misses += count
            return None
        path = self.path_for(identity)
        try:
            evaluation = decode_cache_entry(self._read(path), identity)
        except FileNotFoundError:
            self.misses += count
            return None
        except (OSError, LayercheckError) as exc:
            self.misses += count
            self._reject(path, exc)
            return None
        self.hits += count
        return evaluation

    def peek(self, identity: Mapping[str, Any]) -> Evaluation | None:
        """:meth:`get` for polling: counts nothing, reports nothing (an entry that fails a check is None)."""
        if not self.enabled:
            return None
        try:
            return decode_cache_entry(self._read(self.path_for(identity)), identity)
        except (OSError, LayercheckError):
            return None

    def _reject(self, path: Path, exc: BaseException) -> None:
        problem = getattr(exc, "problem", None) or getattr(exc, "strerror", None) or str(exc)
        self.rejected.append((path, problem))
        if len(self.rejected) <= WARN_LIMIT:
            warnings.warn(CacheEntryWarning(
                f"ignored result-cache entry {path} ({problem}); the evaluation is recomputed"
                + ("" if self.writable else f" (cache mode {self.mode}: the entry is left as it is)")
            ), stacklevel=3)
        elif len(self.rejected) == WARN_LIMIT + 1:
            warnings.warn(CacheEntryWarning(
                "more result-cache entries were ignored and recomputed; `layercheck cache verify` lists them"
            ), stacklevel=3)

    # ------------------------------------------------------------------- write
    def put(self, identity: Mapping[str, Any], evaluation: Evaluation) -> None:
        if not self.writable:
            return
        payload: dict[str, Any] = {
            "format": CACHE_FORMAT,
            "identity": json.loads(json.dumps(dict(identity), default=str)),
            "suite": evaluation.suite,
            "protocol": evaluation.protocol,
            "ablation": evaluation.ablation,
            "removed_layers": list(evaluation.removed_layers),
            "outcomes": {m: list(v) for m, v in evaluation.outcomes.items()},
        }
        try:
            decode_cache_entry({**payload, "signature": ""}, payload["identity"])
        except LayercheckError as exc:
            warnings.warn(CacheEntryWarning(f"not caching {evaluation.suite}/{evaluation.ablation}: {exc}"),
                          stacklevel=2)
            return
        payload["signature"] = _sign(self.key_bytes, payload)
        try:
            atomic_write_text(self.path_for(identity), json.dumps(payload, separators=(",", ":")))
        except OSError as exc:  # a full disk or a read-only folder costs the cache, not the run
            warnings.warn(CacheEntryWarning(f"could not write result-cache entry {self.path_for(identity)}: "
                                            f"{exc.strerror or exc}"), stacklevel=2)
            return
        self.writes += 1

    # ------------------------------------------------------------ maintenance
    def files(self) -> Iterator[Path]:
        """Every entry file (not temporary files of interrupted writes)."""
        if self.folder.is_dir():
            yield from sorted(self.folder.glob("[0-9a-f][0-9a-f]/*.json"))

    def leftovers(self) -> list[Path]:
        """Temporary files of interrupted writes (``.<name>.*.tmp``)."""
        return sorted(self.folder.glob("*/.*.tmp")) if self.folder.is_dir() else []

    def check_file(self, path: Path) -> EntryCheck:
        """Check one entry on its own: signature, schema, outcomes, and that its name is its identity's key."""
        try:
            entry = self._read(path)
            identity = expect_object(entry["identity"], "identity")
            if path.stem != self.key(identity):
                raise SchemaError(f"file name is not the key of the identity it holds ({self.key(identity)})")
            decode_cache_entry(entry, identity)
        except (OSError, LayercheckError) as exc:
            return EntryCheck(path, getattr(exc, "problem", None) or str(exc))
        return EntryCheck(path, None, identity)

    def summary(self) -> str:
        """``"12 from cache, 3 computed, 1 rejected"``, for the end-of-run line."""
        text = f"{self.hits} from cache, {self.misses} computed"
        if self.shared:
            text += f", {self.shared} from other xdist workers"
        if self.rejected:
            text += f", {len(self.rejected)} cache entries rejected"
        return text + ("" if self.mode == "readwrite" else f" (cache {self.mode})")


def age_days(path: Path) -> float:
    return (time.time() - path.stat().st_mtime) / 86400
