"""Moved to :mod:`pytest_layercheck.model.hub_cache`; this alias keeps old imports working during the move."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("pytest_layercheck.model.hub_cache")
