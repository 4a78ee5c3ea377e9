"""Split a TCP byte stream into DC-09 frames (LF ... CR), with a bound on what is held.

Bytes outside a frame, a frame cut short by a new LF, and a frame longer than the bound come out as `Junk`
(what arrived, and why it is not a frame) so the receiver can log them and carry on with the next LF.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.protocols.dc09.frame import MAX_FRAME_BYTES


@dataclass(frozen=True, slots=True)
class Junk:
    """Bytes that are not a frame; `raw` is cut to the bound."""

    raw: bytes
    reason: str


class FrameSplitter:
    """Feed bytes, get whole frames (bytes from LF to CR inclusive) and `Junk`, in arrival order."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._in_frame = False
        self._discarding = False
        self._discarded = 0

    @property
    def buffered(self) -> int:
        """Bytes held now; never more than `max_frame_bytes`."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes | Junk]:
        out: list[bytes | Junk] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self._discarding:
                lf = data.find(b"\n", pos)
                cr = data.find(b"\r", pos)
                if cr >= 0 and (lf < 0 or cr < lf):  # the oversized frame ended with its CR
                    self._discarded += cr + 1 - pos
                    out.append(self._overflow_junk())
                    pos = cr + 1
                    continue
                if lf < 0:
                    self._discarded += n - pos
                    return out
                self._discarded += lf - pos
                out.append(self._overflow_junk())
                pos = lf
            if not self._in_frame:
                lf = data.find(b"\n", pos)
                stray = data[pos:] if lf < 0 else data[pos:lf]
                if stray.strip(b"\r\n\x00 "):
                    out.append(Junk(stray[: self.max_frame_bytes], "bytes outside a frame (no LF before them)"))
                if lf < 0:
                    return out
                self._in_frame = True
                self._buf = bytearray(b"\n")
                pos = lf + 1
                continue
            cr = data.find(b"\r", pos)
            lf = data.find(b"\n", pos)
            if lf >= 0 and (cr < 0 or lf < cr):
                # a new frame starts before this one ended
                chunk = data[pos:lf]
                if self._room(len(chunk)):
                    self._buf += chunk
                    out.append(Junk(bytes(self._buf), "frame cut short by a new LF"))
                    self._buf.clear()
                    self._in_frame = False
                    pos = lf
                    continue
                self._overflow(data[pos:lf])
                pos = lf
                continue
            end = n if cr < 0 else cr + 1
            chunk = data[pos:end]
            if not self._room(len(chunk)):
                self._overflow(chunk)
                pos = end
                if cr >= 0:  # the oversized frame ended here: report it now, not at the next LF
                    out.append(self._overflow_junk())
                continue
            self._buf += chunk
            pos = end
            if cr >= 0:
                out.append(bytes(self._buf))
                self._buf.clear()
                self._in_frame = False
        return out

    def _room(self, extra: int) -> bool:
        return len(self._buf) + extra <= self.max_frame_bytes

    def _overflow(self, chunk: bytes) -> None:
        room = self.max_frame_bytes - len(self._buf)
        self._buf += chunk[:room]
        self._discarded = len(chunk) - room
        self._in_frame = False
        self._discarding = True

    def _overflow_junk(self) -> Junk:
        junk = Junk(
            bytes(self._buf), f"frame longer than {self.max_frame_bytes} bytes ({self._discarded} more bytes dropped)"
        )
        self._buf.clear()
        self._discarding = False
        self._discarded = 0
        return junk

    def close(self) -> list[Junk]:
        """At end of stream: whatever is still held is an unfinished frame."""
        held = bytes(self._buf)
        self._buf.clear()
        self._in_frame = False
        if self._discarding:
            self._discarding = False
            return [Junk(held, f"frame longer than {self.max_frame_bytes} bytes at end of stream")]
        return [Junk(held, "stream ended inside a frame")] if held else []
