"""``python -m libervia_cache.hosts.libervia``: Libervia's launcher with this cache."""

from libervia_cache.hosts.libervia.launcher import main

main()
