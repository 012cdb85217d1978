"""Where pytest-layercheck keeps its caches (default model, result cache).

``$LAYERCHECK_CACHE_DIR`` wins; otherwise the XDG cache (``$XDG_CACHE_HOME`` or ``~/.cache``)
under ``pytest-layercheck``.
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LAYERCHECK_CACHE_DIR"


def cache_root() -> Path:
    """The root cache folder (not created here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pytest-layercheck"


def models_dir() -> Path:
    return cache_root() / "models"


def results_dir() -> Path:
    return cache_root() / "results"
