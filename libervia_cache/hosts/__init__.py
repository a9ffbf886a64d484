"""Hosts other than the reference daemon that the cache plugin runs in.

Each host is an adapter implementing the host API (:mod:`libervia_cache.hostapi`) on top
of another daemon; it finds the plugin through its entry point, like any host, and never
imports it.
"""
