"""``python -m pytest_layercheck``: the ``layercheck`` command, for users who reach for the package name."""

import sys

from pytest_layercheck.cli import main

sys.exit(main())
