"""Argument checks shared by every front end: one message per mistake, naming the argument.

>>> check_int("every_n_epochs", True, 1)
Traceback (most recent call last):
...
ValueError: every_n_epochs must be an integer >= 1, got every_n_epochs=True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` if it is an integer ≥ ``minimum`` (``bool`` is not), else ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


def check_choice(name: str, value: T, choices: Iterable[object]) -> T:
    """``value`` if it is one of ``choices``, else ``ValueError`` naming ``name``."""
    choices = tuple(choices)
    if (isinstance(value, bool) and not any(isinstance(c, bool) for c in choices)) or value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {name}={value!r}")
    return value


def check_instance(name: str, value: object, kind: type[T], *, called: str = "") -> T:
    """``value`` if it is a ``kind`` (``called``: its name in the message), else ``TypeError`` naming ``name``."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a {called or kind.__module__ + '.' + kind.__qualname__}, got {type(value).__name__}")
    return value
