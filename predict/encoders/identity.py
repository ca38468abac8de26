"""What identifies an encoder's tile vectors: the key of the tile-vector store."""
from __future__ import annotations

import hashlib
import json
import os


def encoder_identity(encoder) -> str:
    """``<name>-<digest>`` of the encoder's options and its weight file's size and mtime."""
    options = encoder.options
    text = json.dumps(options, sort_keys=True, default=str)
    resume = (options.get("optim") or {}).get("resume") or (options.get("model") or {}).get("weights")
    if resume and os.path.isfile(resume):
        st = os.stat(resume)
        text += f"|{st.st_size}|{st.st_mtime_ns}"
    return f"{encoder.name}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
