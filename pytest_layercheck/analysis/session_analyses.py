"""Moved to :mod:`pytest_layercheck.pytest_plugin.session_analyses`; this alias keeps old imports working during the move."""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("pytest_layercheck.pytest_plugin.session_analyses")
