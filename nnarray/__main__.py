"""`python -m nnarray train|evaluate`: the command line of nnarray.cli."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
