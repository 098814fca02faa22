"""HMAC request-signing gateway.

This package's top level imports nothing heavy: the client SDK (``gateway.client``)
is imported by callers that never start a server, and its import time counts.
"""

__version__ = "0.1.0"
