"""On-disk cache of evaluations, so re-running an unchanged profile costs almost nothing.

The cache is untrusted input: CI caches are shared and restored from elsewhere. So:

- the key is the sha256 of a complete identity (``profiler.cache_identity``: model weights and config,
  tokenizer, generation config, chat template, suite content, protocol, ablation, items, dtype, device
  type, seed, library versions, scoring-code hash), and the entry stores that identity, compared on read;
- every entry is signed (HMAC-SHA256) with a key that never lives in the cache folder: derived (scrypt) from
  the secret in ``$LAYERCHECK_CACHE_SECRET`` (at least 16 characters; set it from a CI secret to share
  results between runners), or else a random key made once per user in
  ``$XDG_CONFIG_HOME/pytest-layercheck/cache-key`` (mode 0600; a key file others can read or write is
  refused, since whoever holds the key can forge entries);
- every entry is decoded strictly (:func:`validation.decode_cache_entry`: outcomes each metric can hold, as many as the
  items, nothing unknown; an intact entry's optional ``answers``, the model's choice per item, of the
  same length, choice indices in range or bounded strings), and the signature covers every field;
- nothing inside the cache folder is followed: shard folders and entries are opened relative to their
  folder with ``O_NOFOLLOW``, only regular files of bounded size are read (a FIFO, a device or a
  symbolic link is a failing entry, never a hang), and ``prune`` deletes links, never what they point to.

An entry that fails any check is a miss: the evaluation is recomputed, and the entry is reported (a
``CacheEntryWarning`` and :attr:`ResultCache.rejected`). ``$LAYERCHECK_CACHE_MODE`` (or ``mode=``) is
``readwrite`` (default), ``readonly`` (use entries, write none: for a CI job that must not grow or
poison a shared cache) or ``off`` (ignore the cache entirely).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_layercheck.core.atomic import NOFOLLOW, atomic_write_at
from pytest_layercheck.core.cache_dirs import results_dir
from pytest_layercheck.core.errors import ConfigError, LayercheckError
from pytest_layercheck.data.profile_data import Evaluation
from pytest_layercheck.data.validation import (
    CACHE_ENTRY_KEYS,
    CACHE_ENTRY_OPTIONAL,
    SchemaError,
    decode_cache_entry,
    expect_object,
)

#: Bumped when the entry format changes; entries of another format are misses. 3: multiple-choice entries
#: keep p_correct and margin, continuation entries their log-likelihoods.
CACHE_FORMAT = 3
MODE_ENV = "LAYERCHECK_CACHE_MODE"
SECRET_ENV = "LAYERCHECK_CACHE_SECRET"
MODES: tuple[str, ...] = ("readwrite", "readonly", "off")
#: Entries are a few kB; anything larger is not one of ours and is not read.
MAX_ENTRY_BYTES = 16 << 20
#: Rejected entries named one by one in warnings; later ones are only counted in ``rejected``.
WARN_LIMIT = 3
#: ``$LAYERCHECK_CACHE_SECRET`` becomes the HMAC key through scrypt with these fixed parameters (changing
#: any of them changes every key, so they are part of the format): a guessable secret stays costly to
#: guess from a signed entry, and shorter secrets are refused.
SECRET_MIN_CHARS = 16
SECRET_SALT = b"pytest-layercheck result-cache key v1"
SECRET_SCRYPT = {"n": 1 << 14, "r": 8, "p": 1, "dklen": 32}
#: The key file holds 64 hex digits and a newline; anything much larger is not a key and is not read.
KEY_FILE_MAX_BYTES = 4096
_SHARD = re.compile(r"[0-9a-f]{2}")
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | _CLOEXEC
_READ_FLAGS = os.O_RDONLY | NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC  # a FIFO opens, not hangs
#: What ``open(..., O_NOFOLLOW)`` of a symbolic link fails with (Linux and macOS, FreeBSD).
_LINK_ERRNOS = frozenset({errno.ELOOP, errno.EMLINK})


class CacheEntryWarning(UserWarning):
    """A cache entry was ignored (and its evaluation recomputed) because it failed a check."""


class CacheKeyError(ConfigError):
    """The signing key cannot be used: a problem of the configuration, never of one entry (exit 2)."""


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
        raise ConfigError(
            f"unknown result-cache mode {mode if mode is not None else os.environ.get(MODE_ENV)!r}",
            f"set {MODE_ENV} to one of {', '.join(MODES)}",
        )
    return text


def signing_key() -> tuple[bytes, str]:
    """The HMAC key and where it came from: ``$LAYERCHECK_CACHE_SECRET``, else the per-user key file.

    Raises :class:`CacheKeyError` for a secret that is too short and for a key file that is damaged,
    not a regular file, or readable or writable by group or others.
    """
    secret = os.environ.get(SECRET_ENV, "")
    if secret:
        if len(secret) < SECRET_MIN_CHARS:
            raise CacheKeyError(
                f"${SECRET_ENV} has {len(secret)} characters; at least {SECRET_MIN_CHARS} are needed, as whoever "
                "guesses it can forge result-cache entries",
                'set it to a long random string, e.g. the output of `python -c "import secrets; '
                'print(secrets.token_hex(32))"` stored as a CI secret; or unset it to use a per-user key',
            )
        return _derive(secret), f"${SECRET_ENV}"
    path = config_dir() / "cache-key"
    with contextlib.suppress(FileNotFoundError):
        return _read_key_file(path), str(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".cache-key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    try:
        os.link(staging, path)  # never replaces a key another process made first
    except FileExistsError:
        pass
    finally:
        os.unlink(staging)
    return _read_key_file(path), str(path)


@functools.lru_cache(maxsize=4)
def _derive(secret: str) -> bytes:
    """scrypt of the secret (about 50 ms and 16 MiB, once per process)."""
    return hashlib.scrypt(secret.encode(), salt=SECRET_SALT, **SECRET_SCRYPT)


def _read_key_file(path: Path) -> bytes:
    """The 32-byte key in ``path``; FileNotFoundError if there is none, CacheKeyError if it cannot be trusted."""
    fresh = "delete it; a new key is made on next use (entries signed with the old key are then recomputed)"
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CacheKeyError(
                f"the result-cache key file {path} is not a regular file ({_kind(info.st_mode)})", fresh
            )
        if os.name == "posix" and info.st_mode & 0o077:
            raise CacheKeyError(
                f"the result-cache key file {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or others "
                "can read or change it, and whoever holds the key can forge result-cache entries",
                f"`chmod 600 {path}` if nobody else could have used it; otherwise {fresh}",
            )
        data = os.read(fd, KEY_FILE_MAX_BYTES + 1)
    finally:
        os.close(fd)
    text = data.decode("ascii", errors="replace").strip()
    if len(data) > KEY_FILE_MAX_BYTES or not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise CacheKeyError(
            f"the result-cache key file {path} is damaged: it must hold 64 hex digits (a 32-byte "
            "key), as layercheck writes it",
            fresh,
        )
    return bytes.fromhex(text)


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def _not_followed(where: Path, exc: OSError) -> OSError:
    """``exc`` when it is not about a link; else an OSError whose text says the link is never followed."""
    if exc.errno not in _LINK_ERRNOS and exc.errno != errno.ENOTDIR:
        return exc
    return OSError(exc.errno, f"{where} is a symbolic link or not a folder; nothing inside the cache is followed")


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

    def __init__(
        self, folder: Path | None = None, enabled: bool = True, *, mode: str | None = None, key: bytes | None = None
    ) -> None:
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

    # ------------------------------------------------------- no symlink followed
    @contextlib.contextmanager
    def _folder_fd(self, parent: Path, *, create: bool = False) -> Iterator[int]:
        """An open descriptor of ``parent``: the cache folder itself (taken as configured), or one of its
        shard folders, opened with ``O_NOFOLLOW`` so a link put in its place is never followed."""
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        root = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)
        try:
            if parent == self.folder:
                yield root
                return
            if parent.parent != self.folder:
                raise OSError(errno.EINVAL, f"{parent} is not a folder of the result cache {self.folder}")
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(parent.name, dir_fd=root)
            try:
                shard = os.open(parent.name, _DIR_FLAGS, dir_fd=root)
            except OSError as exc:
                raise _not_followed(parent, exc) from None
            try:
                yield shard
            finally:
                os.close(shard)
        finally:
            os.close(root)

    def remove(self, path: Path) -> None:
        """Delete ``path`` (an entry, a leftover, or a link in their place) itself, never what a link points to."""
        with self._folder_fd(path.parent) as folder, contextlib.suppress(FileNotFoundError):
            os.unlink(path.name, dir_fd=folder)

    def _read_bytes(self, path: Path) -> bytes:
        """The bytes of the regular file ``path``, at most ``MAX_ENTRY_BYTES``; anything else is a SchemaError."""
        with self._folder_fd(path.parent) as folder:
            try:
                fd = os.open(path.name, _READ_FLAGS, dir_fd=folder)
            except OSError as exc:
                if exc.errno in _LINK_ERRNOS:
                    raise SchemaError("a symbolic link; entries are never followed") from None
                raise
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise SchemaError(f"{_kind(info.st_mode)}, not a regular file; only regular files are read")
            if info.st_size > MAX_ENTRY_BYTES:
                raise SchemaError(f"{info.st_size} bytes, more than any entry ({MAX_ENTRY_BYTES})")
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_ENTRY_BYTES:  # bounded even if the file grows while it is read
                chunk = os.read(fd, min(1 << 20, MAX_ENTRY_BYTES + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        if size > MAX_ENTRY_BYTES:
            raise SchemaError(f"more than {MAX_ENTRY_BYTES} bytes, more than any entry")
        return b"".join(chunks)

    # -------------------------------------------------------------------- read
    def _read(self, path: Path) -> dict[str, Any]:
        """The signed payload in ``path``; raises SchemaError (or OSError) with the problem."""
        data = self._read_bytes(path)
        key = self.key_bytes  # a key that cannot be used is CacheKeyError, the run's problem, not the entry's
        try:
            payload = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SchemaError(f"not valid JSON ({exc})") from None
        entry = expect_object(payload, "cache entry")
        if entry.get("format") != CACHE_FORMAT or isinstance(entry.get("format"), bool):
            raise SchemaError(f"entry format {entry.get('format')!r}, not {CACHE_FORMAT} (written by another version)")
        expect_object(entry, "cache entry", CACHE_ENTRY_KEYS, CACHE_ENTRY_KEYS - CACHE_ENTRY_OPTIONAL)
        signature = entry["signature"]
        try:
            expected = _sign(key, entry)
        except ValueError:
            raise SchemaError("holds a number that is not finite") from None
        if not isinstance(signature, str) or not hmac.compare_digest(signature, expected):
            raise SchemaError(
                "signature does not match this cache's key (edited, forged, or written with "
                f"another key; share a key between machines with ${SECRET_ENV})"
            )
        return entry

    def get(
        self, identity: Mapping[str, Any], *, count: bool = True, choices: Sequence[int] | None = None
    ) -> Evaluation | None:
        """The stored evaluation for ``identity``, or None (absent, cache off, or an entry that failed a check).

        ``count=False`` leaves :attr:`hits` and :attr:`misses` alone (the caller counts what it does
        with the answer); a rejected entry is reported either way. ``choices`` (each item's number of
        choices) bounds the recorded answers of a multiple-choice evaluation.
        """
        if not self.enabled:
            self.misses += count
            return None
        path = self.path_for(identity)
        try:
            evaluation = decode_cache_entry(self._read(path), identity, choices)
        except FileNotFoundError:
            self.misses += count
            return None
        except CacheKeyError:
            raise
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
        except CacheKeyError:
            raise
        except (OSError, LayercheckError):
            return None

    def _reject(self, path: Path, exc: BaseException) -> None:
        problem = getattr(exc, "problem", None) or getattr(exc, "strerror", None) or str(exc)
        self.rejected.append((path, problem))
        if len(self.rejected) <= WARN_LIMIT:
            warnings.warn(
                CacheEntryWarning(
                    f"ignored result-cache entry {path} ({problem}); the evaluation is recomputed"
                    + ("" if self.writable else f" (cache mode {self.mode}: the entry is left as it is)")
                ),
                stacklevel=3,
            )
        elif len(self.rejected) == WARN_LIMIT + 1:
            warnings.warn(
                CacheEntryWarning(
                    "more result-cache entries were ignored and recomputed; `layercheck cache verify` lists them"
                ),
                stacklevel=3,
            )

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
        if evaluation.answers is not None:
            payload["answers"] = list(evaluation.answers)
        try:
            decode_cache_entry({**payload, "signature": ""}, payload["identity"])
        except LayercheckError as exc:
            warnings.warn(
                CacheEntryWarning(f"not caching {evaluation.suite}/{evaluation.ablation}: {exc}"), stacklevel=2
            )
            return
        payload["signature"] = _sign(self.key_bytes, payload)
        path = self.path_for(identity)
        try:
            with self._folder_fd(path.parent, create=True) as folder:
                atomic_write_at(folder, path.name, json.dumps(payload, separators=(",", ":")).encode())
        except OSError as exc:  # a full disk or a read-only folder costs the cache, not the run
            warnings.warn(
                CacheEntryWarning(
                    f"could not write result-cache entry {self.path_for(identity)}: {exc.strerror or exc}"
                ),
                stacklevel=2,
            )
            return
        self.writes += 1

    # ------------------------------------------------------------ maintenance
    def _walk(self) -> Iterator[Path]:
        """What the shard folders hold, and links in their place, without following any symbolic link."""
        if not self.folder.is_dir():
            return
        with os.scandir(self.folder) as top:
            shards = [(e.name, e.is_dir(follow_symlinks=False)) for e in top if _SHARD.fullmatch(e.name)]
        for name, is_folder in sorted(shards):
            if not is_folder:  # a link or a file where a shard folder belongs: reported, never entered
                yield self.folder / name
                continue
            with self._folder_fd(self.folder / name) as folder, os.scandir(folder) as inside:
                names = sorted(entry.name for entry in inside if not entry.is_dir(follow_symlinks=False))
            yield from (self.folder / name / child for child in names)

    def files(self) -> Iterator[Path]:
        """Every entry file (not temporary files of interrupted writes), and links where shard folders belong."""
        for path in self._walk():
            if path.parent == self.folder or (path.suffix == ".json" and not path.name.startswith(".")):
                yield path

    def leftovers(self) -> list[Path]:
        """Temporary files of interrupted writes (``.<name>.*.tmp``)."""
        return [p for p in self._walk() if p.parent != self.folder and p.name.startswith(".") and p.suffix == ".tmp"]

    def check_file(self, path: Path) -> EntryCheck:
        """Check one entry on its own: signature, schema, outcomes, and that its name is its identity's key."""
        try:
            if path.parent == self.folder:
                raise SchemaError(f"{_kind(path.lstat().st_mode)} where a folder of entries belongs; never followed")
            entry = self._read(path)
            identity = expect_object(entry["identity"], "identity")
            if path.stem != self.key(identity):
                raise SchemaError(f"file name is not the key of the identity it holds ({self.key(identity)})")
            decode_cache_entry(entry, identity)
        except CacheKeyError:
            raise
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
    """Days since ``path`` (a link itself, not its target) was written."""
    return (time.time() - path.lstat().st_mtime) / 86400
