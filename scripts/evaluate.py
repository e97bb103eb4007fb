#!/usr/bin/env python
"""Evaluate a checkpoint written by scripts/train.py: the same as `nnarray evaluate` (see --help)."""

import sys

from nnarray.cli import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
