"""The client side of the daemon's control socket: standard library only.

The CLI (and any script) talks to a running daemon through :class:`ControlClient`;
the wire protocol is in :mod:`.protocol`, shared with the daemon's server side
(``libervia_cache.backend.bridge``). Nothing here imports Twisted or SQLAlchemy, so that
a command starts at once.
"""

from libervia_cache.control.client import ControlClient
from libervia_cache.control.protocol import MAX_LINE_LENGTH

__all__ = ["MAX_LINE_LENGTH", "ControlClient"]
