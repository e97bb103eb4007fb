"""Exceptions raised by :mod:`nnarray.datasets`."""

from __future__ import annotations

__all__ = ["DatasetError", "DatasetNotFoundError"]


class DatasetError(ValueError):
    """A data file is missing, corrupt or not what it should be.

    The message names the file, what was expected and what was found.
    """


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """No directory holds the dataset's files and they could not be downloaded.

    The message lists the directories searched and says how to get the files.
    """
