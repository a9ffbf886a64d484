"""The ``libervia-cache`` command: run the daemon, read and manage the cache.

Every command but ``daemon`` and ``db`` talks to a running daemon through its control
socket. Each has ``--help``; those that print results have ``--json`` (one JSON document
on stdout, nothing else there). Errors are one line on stderr, without traceback unless
``--debug`` is given. Exit codes (:mod:`libervia_cache.errors`): 0 success, 1 user error
(bad arguments, not found, declined confirmation), 2 daemon unreachable, 3 server or
internal error.

A thin client: importing it, and running any client command, loads the standard
library, click and the stdlib-only :mod:`libervia_cache.control` and
:mod:`libervia_cache.errors`; ``rich`` only to draw a table or a progress bar. ``daemon``
and ``db`` import Twisted, SQLAlchemy and Alembic when they run.

One module per job:

- :mod:`.app`: the root group, global options, :class:`Context`, errors and exit codes;
- :mod:`.values`: dates, ``--parsed`` values, ``--order-by`` keys;
- :mod:`.output`: ``--json``, tables, progress (rich imported lazily);
- :mod:`.items` (``get``, ``cache-get``), :mod:`.sync`, :mod:`.search`,
  :mod:`.manage` (``purge``, ``reset``), :mod:`.status`, :mod:`.daemon`, :mod:`.db`,
  :mod:`.service` (``install-service``).
"""

from libervia_cache.cli import daemon, db, items, manage, search, service, status, sync
from libervia_cache.cli.app import Context, main
from libervia_cache.cli.values import parse_date, parse_order, parse_value
from libervia_cache.errors import EXIT_FAILURE, EXIT_USER_ERROR

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USER_ERROR",
    "Context",
    "main",
    "parse_date",
    "parse_order",
    "parse_value",
]

# the submodules stay reachable by their names (libervia_cache.cli.sync is the module)
for _command in (
    daemon.daemon,
    items.get,
    items.cache_get,
    sync.sync,
    search.search,
    manage.purge,
    manage.reset,
    status.status,
    service.install_service,
    db.db,
):
    main.add_command(_command)
