"""Libervia's own launcher, with libervia-cache as its ``PUBSUB_CACHE``.

``libervia-backend-cache [fg|bg|stop|status ...]`` (or ``python -m
libervia_cache.hosts.libervia``) takes the same arguments as ``libervia-backend`` and
runs Libervia's launcher in this process, after one change to how Python imports
modules: Libervia's plugin loader imports every
``libervia.backend.plugins.plugin_*`` module it finds; the name of the stock cache,
``libervia.backend.plugins.plugin_pubsub_cache``, is answered with
:mod:`libervia_cache.hosts.libervia.plugin_pubsub_cache` instead (:class:`ReplaceStockCache`).
So this cache is loaded exactly where the stock one was (before Libervia's XEP-0277
plugin, which recommends ``PUBSUB_CACHE`` and registers its analyser on it), the stock
cache's file is never read, and no file of Libervia's package changes. Running
``libervia-backend`` again brings the stock cache back.

This module is imported before Libervia and Twisted's reactor: standard library only.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import runpy
import shutil
import sys
from collections.abc import Sequence
from types import ModuleType

__all__ = ["REPLACEMENT_MODULE", "STOCK_CACHE_MODULE", "ReplaceStockCache", "install", "main"]

#: the module Libervia's plugin loader imports for its pubsub cache
STOCK_CACHE_MODULE = "libervia.backend.plugins.plugin_pubsub_cache"
#: what it gets instead
REPLACEMENT_MODULE = "libervia_cache.hosts.libervia.plugin_pubsub_cache"
#: Libervia's launcher: a module when Libervia is installed with pip, a script in Debian
LAUNCHER_MODULE = "libervia.backend.core.launcher"
LAUNCHER_SCRIPT = "libervia-backend"


class ReplaceStockCache(importlib.abc.MetaPathFinder):
    """Answers the stock cache's module name with the replacement's source file.

    The replacement is loaded under the stock name, as a module of its own (Libervia
    unloads plugin modules by that name when they fail); it holds only ``PLUGIN_INFO``
    and imports the rest of the adapter.
    """

    def __init__(self, stock: str = STOCK_CACHE_MODULE, replacement: str = REPLACEMENT_MODULE):
        self.stock = stock
        self.replacement = replacement

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.stock:
            return None
        found = importlib.util.find_spec(self.replacement)
        if found is None or found.origin is None:
            raise ImportError(f"libervia-cache: {self.replacement} cannot be found")
        return importlib.util.spec_from_file_location(fullname, found.origin)


def install() -> ReplaceStockCache:
    """Put the finder first in ``sys.meta_path`` (once); returns it."""
    for finder in sys.meta_path:
        if isinstance(finder, ReplaceStockCache):
            return finder
    finder = ReplaceStockCache()
    sys.meta_path.insert(0, finder)
    if STOCK_CACHE_MODULE in sys.modules:
        # imported before us: the plugin loader would reuse it
        del sys.modules[STOCK_CACHE_MODULE]
    return finder


def run_libervia_launcher(arguments: Sequence[str]) -> None:
    """Run Libervia's launcher with ``arguments``, in this process."""
    sys.argv = [LAUNCHER_SCRIPT, *arguments]
    try:
        launcher = importlib.import_module(LAUNCHER_MODULE)
    except ModuleNotFoundError:
        script = shutil.which(LAUNCHER_SCRIPT)
        if script is None:
            raise SystemExit(
                "libervia-cache: Libervia's launcher was found neither as the module "
                f"{LAUNCHER_MODULE} nor as the command {LAUNCHER_SCRIPT} on PATH"
            ) from None
        runpy.run_path(script, run_name="__main__")
    else:
        launcher.Launcher.run()


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m libervia_cache.hosts.libervia``: see the module docstring."""
    install()
    run_libervia_launcher(sys.argv[1:] if argv is None else argv)
