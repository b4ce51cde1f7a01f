"""How tables print what has no value (no heavy imports: the CLI's ``--help`` uses it)."""

UNDEFINED = "–"
"""Printed for an undefined value (NaN; an AE quantity where EVBMF kept nothing)."""


def cell(value: float, fmt: str = ".3f") -> str:
    """``value`` formatted with ``fmt``, or ``UNDEFINED`` when it is NaN."""
    return UNDEFINED if value != value else format(value, fmt)
