"""Benchmarks of issue 6: ``python -m bench`` (``tox -e bench``)."""
