"""Filesystem faults for tests: a small tmpfs, filled to the last byte (needs root, which
the CI has); everything mounted is unmounted at the end."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``path`` (created), unmounted at the end."""
    path.mkdir()
    mount("-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        done = subprocess.run(["umount", str(path)], capture_output=True)
        if done.returncode != 0:  # still busy: detach it anyway, never leave it behind
            subprocess.run(["umount", "--lazy", str(path)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; the file that holds it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError:
                pass
    return filler


LOCKER = """
import sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)
connection.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
connection.execute("ROLLBACK")
connection.close()
"""


@contextmanager
def locked_by_another_process(database: Path) -> Iterator[None]:
    """Another process holds the database's write lock (``BEGIN EXCLUSIVE``) meanwhile."""
    locker = subprocess.Popen(
        [sys.executable, "-c", LOCKER, str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert locker.stdin is not None and locker.stdout is not None
    try:
        assert locker.stdout.readline().strip() == "locked"
        yield
    finally:
        locker.stdin.write("\n")
        locker.stdin.close()
        assert locker.wait(timeout=30) == 0
