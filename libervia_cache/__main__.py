"""``python -m libervia_cache``: the ``libervia-cache`` command."""

from libervia_cache.cli import main

main()
