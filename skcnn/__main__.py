"""python -m skcnn: the command line (see skcnn.cli)."""

import sys

from .cli import main

sys.exit(main())
