"""The control socket's wire protocol, shared by the daemon and its clients.

Newline-delimited JSON (UTF-8), one object per line:

- request: ``{"id": <any JSON>, "method": "name", "params": {"key": value, ...}}``
- reply: ``{"id": ..., "result": <JSON>}`` or
  ``{"id": ..., "error": {"kind": "not_found", "message": "one line"}}`` (kinds:
  :data:`libervia_cache.errors.KINDS`)
- progress: ``{"id": ..., "progress": {...}}``, zero or more before the reply.

A client may send several requests on one connection without waiting (replies carry
the request's id and may come in any order) and may keep the connection for later
calls. What one client and all clients together can make the daemon hold is capped
(``libervia_cache.backend.bridge.Limits``): a request line longer than
:data:`MAX_LINE_LENGTH` or a reply longer than :data:`MAX_REPLY_LENGTH` is a
``too_large`` error.
"""

from __future__ import annotations

import json
from typing import Any

#: Longest request line the daemon accepts (bytes, newline excluded). Requests are small
#: JSON objects; a longer line is a ``too_large`` error and the daemon closes the
#: connection.
MAX_LINE_LENGTH = 1024 * 1024

#: Longest reply line the daemon sends (bytes); a longer result is answered with a
#: ``too_large`` error instead (ask for fewer items, or page with RSM).
MAX_REPLY_LENGTH = 16 * 1024 * 1024

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def encode(message: dict[str, Any]) -> bytes:
    """One message as a line (newline included); ``TypeError`` or ``ValueError`` if it
    is not JSON."""
    return (_encoder.encode(message) + "\n").encode()
