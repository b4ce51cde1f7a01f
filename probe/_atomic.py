"""Write a file so that readers see it absent, old, or complete — never half-written."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""Errors of a full disk, a full quota or a file-size limit: they name no file."""


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", *, sync: bool = True, **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it (unless ``sync=False``: a
    file that need not survive a power loss) and rename it onto ``path``.

    ``mode`` is ``"w"`` or ``"wb"``; ``open_kwargs`` go to ``open`` (e.g. ``newline=""``).
    On any error the temporary file is removed and ``path`` is left as it was; an
    ``OSError`` of a full disk or quota (which names no file) is raised again naming ``path``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            if sync:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.filename is not None or error.errno not in _FULL:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        tmp.unlink(missing_ok=True)
