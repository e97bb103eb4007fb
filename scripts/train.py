#!/usr/bin/env python
"""Train an MLP classifier with nnarray: the same as `nnarray train` (see --help)."""

import sys

from nnarray.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
