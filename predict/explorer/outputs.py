"""The explorer's outputs folder: every file kept there (result records, maps, thumbnails, downloads) is a
stored file of :mod:`predict.provenance`, written with the digest of its bytes and the key that made it (a
result's id, an image's key and side), and used or served only once verified; one that fails is logged in one
line naming it and the reason, then made again."""
from __future__ import annotations

import logging
import os

from predict.provenance import record_path, stored_problem

logger = logging.getLogger(__name__)


def made(path: str) -> bool:
    """Whether a stored file or its record lies at ``path``: one never made is simply made, without a line
    in the log."""
    return os.path.lexists(path) or os.path.lexists(record_path(path))


def kept(path: str, key: str) -> bool:
    """Whether the stored file at ``path`` is whole and made by ``key`` (verified: :func:`stored_problem`),
    so that it may be used or served as it is. One that lies there but fails is logged in one line naming
    it and the reason, and the caller makes it again.

    >>> import tempfile
    >>> from predict.provenance import write_stored
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = os.path.join(folder, "a.png")
    ...     before = kept(path, "k1")
    ...     _ = write_stored(path, b"png", "k1")
    ...     before, kept(path, "k1")
    (False, True)
    """
    if not made(path):
        return False
    problem = stored_problem(path, key)
    if problem is not None:
        logger.warning("%s: %s; made again", path, problem)
    return problem is None
