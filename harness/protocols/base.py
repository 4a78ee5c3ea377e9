"""What every codec shares: the one error type for malformed peer input, and size bounds."""

from __future__ import annotations


class ProtocolError(ValueError):
    """Bytes from a peer that do not form a valid message of the protocol.

    Not a user-input error (`harness.errors.InputError`): the system under test sent it, so it is a
    finding to record (with `reason` and, where known, the byte `offset`), never a crash.
    """

    def __init__(self, protocol: str, reason: str, *, offset: int | None = None) -> None:
        self.protocol = protocol
        self.reason = reason
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{protocol}: {reason}{where}")


MAX_FRAME_BYTES = 64 * 1024
"""No alarm protocol frame vtlab speaks is legitimately larger; anything bigger is refused unread."""
