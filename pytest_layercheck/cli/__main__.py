"""``python -m pytest_layercheck.cli``: the same as the ``layercheck`` script."""

import sys

from . import main

sys.exit(main())
