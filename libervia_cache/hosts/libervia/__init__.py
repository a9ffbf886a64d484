"""Running the cache plugin inside the real Libervia backend, as its ``PUBSUB_CACHE``.

=====================  ================================================================
module                 job
=====================  ================================================================
launcher               ``python -m libervia_cache.hosts.libervia``: Libervia's own
                       launcher, with this cache loaded in place of the stock one
plugin_pubsub_cache    the Libervia plugin module loaded under the stock cache's name
adapter                the Libervia plugin's main class: builds the host, the plugin,
                       the bridge methods; Libervia's analyser API
host                   the host API on Libervia: configuration, clients, triggers
pubsub                 ``host.plugins["XEP-0060"]`` on Libervia's XEP-0060 plugin:
                       network requests, subscriptions, events rewrapped
bridge                 the ``ps_cache_*`` methods with Libervia's typed signatures
queries                Libervia's search queries, purge filters and search results
=====================  ================================================================

Only ``launcher`` is imported before Libervia starts: it must stay free of Twisted's
reactor and of Libervia's modules. Everything else is imported by Libervia's plugin
loader, once its reactor and logs are set up.
"""
