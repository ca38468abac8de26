"""Warnings as data: a function that may warn takes ``notes``.

Called from Python, a function warns as usual; the run engine passes a list instead and gets each sample's
warnings back with its outcome, whichever thread worked on it (``warnings.catch_warnings`` changes
process-wide state and is not thread-safe).
"""
from __future__ import annotations

import warnings


def warn(message: str, notes: list[str] | None = None, stacklevel: int = 2) -> None:
    """Append ``message`` to ``notes``, or without a list issue it as a ``UserWarning`` (``stacklevel`` as
    for ``warnings.warn``, counted from the caller).

    >>> notes = []
    >>> warn("image.jpg: all tile scores are equal", notes)
    >>> notes
    ['image.jpg: all tile scores are equal']
    """
    if notes is None:
        warnings.warn(message, stacklevel=stacklevel + 1)
    else:
        notes.append(message)
