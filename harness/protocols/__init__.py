"""Sans-I/O protocol codecs: bytes in, typed frozen events out; events in, bytes out.

No sockets, no asyncio, no clocks (a timestamp is an argument, never read here). This is what lets the
asyncio transports, the locust users, the reference lab and the probes share one implementation of each
protocol, and what makes each codec testable from byte strings alone.

Malformed input from a peer raises `ProtocolError` (never anything else): a harness must report what the
system under test sent, not crash on it.
"""

from harness.protocols.base import ProtocolError

__all__ = ["ProtocolError"]
