"""pytest-layercheck: depth-sensitivity profiles of language models as pytest regression tests."""

from pytest_layercheck.core.version import __version__

__all__ = ["__version__"]
