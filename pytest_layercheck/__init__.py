"""pytest-layercheck: depth-sensitivity profiles of language models as pytest regression tests."""

__version__ = "0.1.0"
