"""The Libervia plugin module of libervia-cache: ``PUBSUB_CACHE``.

The launcher (:mod:`.launcher`) has Libervia's plugin loader import this file under the
stock cache's module name. Everything happens in :class:`.adapter.PubsubCache`.
"""

from libervia.backend.core.constants import Const as C

from libervia_cache.hosts.libervia.adapter import PubsubCache

__all__ = ["PLUGIN_INFO", "PubsubCache"]

PLUGIN_INFO = {
    C.PI_NAME: "PubSub Cache (libervia-cache)",
    C.PI_IMPORT_NAME: "PUBSUB_CACHE",
    C.PI_TYPE: C.PLUG_TYPE_PUBSUB,
    C.PI_MODES: C.PLUG_MODE_BOTH,
    C.PI_PROTOCOLS: [],
    C.PI_DEPENDENCIES: ["XEP-0059", "XEP-0060"],
    C.PI_RECOMMENDATIONS: [],
    C.PI_MAIN: "PubsubCache",
    # a handler per client: it sees every (re)connection of the stream
    C.PI_HANDLER: "yes",
    C.PI_DESCRIPTION: "Local cache of pubsub nodes (libervia-cache), in place of the stock one",
}
