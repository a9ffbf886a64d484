"""What the commands print: the ``--json`` document, tables and progress.

``rich`` is imported only when a table or a progress bar is actually drawn: it costs
more to import than the rest of the command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import click

__all__ = ["console", "print_json", "progress_display", "table"]

#: a sink of the daemon's progress messages
ProgressSink = Callable[[dict[str, Any]], None]


def print_json(data: Any) -> None:
    """The one JSON document of ``--json`` on stdout."""
    click.echo(json.dumps(data, ensure_ascii=False))


def console(stderr: bool = False) -> Any:
    """A rich console; when not writing to a terminal, wide enough to never wrap tables."""
    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal:
        out = Console(stderr=stderr, width=10_000, no_color=True)
    return out


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> Any:
    """A rich table of ``rows`` under ``headers``, for :func:`console` to print."""
    from rich.table import Table

    drawn = Table(*headers)
    for row in rows:
        drawn.add_row(*row)
    return drawn


def _progress_text(data: dict[str, Any]) -> str:
    total = data.get("total")
    return f"{data.get('stored', 0)} item(s) stored" + (f" of {total}" if total else "")


@contextmanager
def progress_display(label: str, as_json: bool) -> Iterator[ProgressSink | None]:
    """A progress sink: a rich bar on a terminal, plain lines otherwise, none for JSON.

    The daemon's progress messages carry ``stored`` and, when the service says how many
    items there are, ``total``.
    """
    if as_json:
        yield None
        return
    if not sys.stdout.isatty():

        def line(data: dict[str, Any]) -> None:
            click.echo(f"{label}: {_progress_text(data)}")

        yield line
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("items"),
        TimeElapsedColumn(),
        console=console(),
    ) as bar:
        task_id = bar.add_task(label, total=None)

        def update(data: dict[str, Any]) -> None:
            bar.update(task_id, completed=data.get("stored", 0), total=data.get("total"))

        yield update
