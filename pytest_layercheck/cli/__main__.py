"""``python -m pytest_layercheck.cli``: the same as the ``layercheck`` script."""

import sys

from pytest_layercheck.cli import main

sys.exit(main())
