"""libervia-cache: a transparent pubsub (XEP-0060) cache for a Libervia-style daemon."""

__version__ = "0.1.0.dev0"
