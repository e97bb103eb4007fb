"""`python -m nnarray train|evaluate`: the command line of nnarray.cli."""

import sys

from .cli import main

sys.exit(main())
