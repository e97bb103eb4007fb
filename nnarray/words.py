"""Whose words a message speaks: the library's arguments (``data_dir=DIR``) or a command's flags (``--data-dir DIR``).

Library messages name the arguments of the function called, so advice reads ``pass data_dir=DIR``. The training
command reaches the same code through its flags; while it runs it installs its vocabulary (:func:`speaking`), a
table from argument names to its own words, and the same messages then read ``pass --data-dir DIR``. Only the
wording changes, never what is checked or decided.

>>> arg("data_dir", "DIR")
'data_dir=DIR'
>>> with speaking({"data_dir": lambda v: f"--data-dir {v}"}):
...     arg("data_dir", "DIR")
'--data-dir DIR'

:func:`number` and :func:`plural` keep figures and counts readable in reprs and messages.
"""

from __future__ import annotations

import contextlib
import contextvars

__all__ = ["arg", "speaking", "number", "plural"]

_VOCABULARY: contextvars.ContextVar = contextvars.ContextVar("nnarray_vocabulary", default=None)


def arg(name, value=None, phrase=None):
    """How a message names the setting ``name`` (with ``value``, a display text such as ``"DIR"`` or ``"True"``).

    The library's words are ``phrase`` if given, else ``name=value`` (or ``name``). While a command speaks
    (:func:`speaking`) and its table has ``name``, its entry is used instead: a text, or a function of ``value``.
    """
    table = _VOCABULARY.get()
    if table is not None and name in table:
        spoken = table[name]
        return spoken(value) if callable(spoken) else spoken
    if phrase is not None:
        return phrase
    return name if value is None else f"{name}={value}"


@contextlib.contextmanager
def speaking(table):
    """Messages made inside the block use ``table`` (``{argument name: text or function of the value}``)."""
    token = _VOCABULARY.set(dict(table))
    try:
        yield
    finally:
        _VOCABULARY.reset(token)


def number(x):
    """A float as a person would write it, still valid Python: 12 significant digits drop the binary noise.

    >>> number(0.05 * 0.9), number(1e-3), number(2.0), number(float("inf"))
    ('0.045', '0.001', '2.0', 'inf')
    """
    return repr(float(f"{float(x):.12g}"))


def plural(n, noun, nouns=None):
    """``"1 epoch"``, ``"2 epochs"``.

    >>> plural(1, "epoch"), plural(3, "epoch"), plural(2, "entry", "entries")
    ('1 epoch', '3 epochs', '2 entries')
    """
    return f"{n} {noun if n == 1 else (nouns or noun + 's')}"
