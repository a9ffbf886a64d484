"""The control socket's wire protocol, shared by the daemon and its clients.

Newline-delimited JSON (UTF-8), one object per line:

- request: ``{"id": <any JSON>, "method": "name", "params": {"key": value, ...}}``
- reply: ``{"id": ..., "result": <JSON>}`` or
  ``{"id": ..., "error": {"kind": "not_found", "message": "one line"}}`` (kinds:
  :data:`libervia_cache.errors.KINDS`)
- progress: ``{"id": ..., "progress": {...}}``, zero or more before the reply.
"""

from __future__ import annotations

import json
from typing import Any

#: Longest request line the daemon accepts (bytes, newline excluded).
MAX_LINE_LENGTH = 4 * 1024 * 1024


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line (newline included)."""
    data = json.dumps(message, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return data.encode() + b"\n"
