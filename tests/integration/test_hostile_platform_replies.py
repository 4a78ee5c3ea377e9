"""vtlab's own protocol ends against a hostile platform: what the platform under test sends back to vtlab's DC-09
transmitter and SCAIP device never crashes, hangs or grows them, and never costs the next valid exchange.

Each platform here is a real socket on 127.0.0.1 served by a thread, written from the wire format (not from
vtlab's codecs), that answers with junk, broken frames, replies for sequences never sent, duplicates, replies
dribbled byte by byte, endless lines, a 2 GB Content-Length, XML with a DTD, `<mrs>` for unknown refs, silence
with a full receive buffer, a reset mid-frame or a flood of datagrams. Every test then checks that a valid
alarm is still sent and its valid reply matched, that the end's buffers stay within their bounds, that the bad
input was reported the way the end reports (`refused`), and that a send ends within a small factor of its
timeout. The generated part (hypothesis) is bounded so the module runs in well under a minute."""

from __future__ import annotations

import asyncio
import re
import secrets
import socket
import struct
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.pki import make_pki
from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, TransmitterState, crc16_arc
from harness.protocols.sip.events import Transmit
from harness.transports.dc09 import DC09Transmitter
from harness.transports.dc09 import Path as Dc09Path
from harness.transports.sip import ScaipDevice, ScaipSendError, client_ssl_context

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ACCOUNT = "1234"


# --- a hostile platform: real sockets, one thread per connection ----------------------------------


class Link:
    """One connection (TCP) or the datagram socket (UDP) of the platform, as its serving thread sees it."""

    def __init__(self, sock: socket.socket, index: int, udp: bool) -> None:
        self.sock = sock
        self.index = index
        self.udp = udp
        self.buf = b""
        self.addr: tuple[str, int] | None = None
        sock.settimeout(10.0)

    def recv(self) -> bytes:
        if self.udp:
            data, self.addr = self.sock.recvfrom(65536)
            return data
        return self.sock.recv(65536)

    def frame(self) -> bytes | None:
        """The next DC-09 frame (LF ... CR) the transmitter sent, or None when it hung up."""
        while b"\r" not in self.buf:
            try:
                data = self.recv()
            except OSError:
                return None
            if not data:
                return None
            self.buf += data
        frame, _, self.buf = self.buf.partition(b"\r")
        return frame[frame.find(b"\n") :] + b"\r"

    def sip(self) -> tuple[str, dict[str, str], bytes] | None:
        """The next SIP message: (start line, headers by lower-case name, body)."""
        while True:
            if self.udp:
                try:
                    raw = self.recv()
                except OSError:
                    return None
            else:
                head_end = self.buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", self.buf[:head_end]).group(1))  # type: ignore[union-attr]
                    if len(self.buf) >= head_end + 4 + length:
                        raw, self.buf = self.buf[: head_end + 4 + length], self.buf[head_end + 4 + length :]
                    else:
                        raw = b""
                else:
                    raw = b""
                if not raw:
                    try:
                        data = self.recv()
                    except OSError:
                        return None
                    if not data:
                        return None
                    self.buf += data
                    continue
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers.setdefault(name.strip().lower(), value.strip())
            return lines[0], headers, body

    def send(self, data: bytes) -> None:
        if self.udp:
            assert self.addr is not None
            self.sock.sendto(data, self.addr)
        else:
            self.sock.sendall(data)


class Platform:
    """A listening socket (or a UDP socket) whose connections are served by `serve(link)` on threads."""

    def __init__(self, serve: Callable[[Link], None], kind: str = "tcp", *, rcvbuf: int | None = None) -> None:
        self.serve = serve
        self.udp = kind == "udp"
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if self.udp else socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.errors: list[BaseException] = []
        self.frames = 0
        if self.udp:
            self._spawn(Link(self.sock, 0, True))
        else:
            self.sock.listen(16)
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        index = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            self._spawn(Link(conn, index, False))
            index += 1

    def _spawn(self, link: Link) -> None:
        def run() -> None:
            try:
                self.serve(link)
            except OSError:
                pass
            except BaseException as exc:  # shown by the test, never lost
                self.errors.append(exc)

        threading.Thread(target=run, daemon=True).start()

    def close(self) -> None:
        for conn in self.conns:
            with _quiet():
                conn.close()
        with _quiet():
            self.sock.close()
        assert not self.errors, self.errors


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the transmitter sees a reset, not an orderly end."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- DC-09 wire, written from the format (LF CRC LEN "ID"SEQ R L #ACCT [data] CR) --------------------


def dc09_seq(frame: bytes) -> int:
    m = re.search(rb'"[A-Z*-]+"(\d{4})', frame)
    assert m, frame
    return int(m.group(1))


def dc09_reply(kind: str, seq: int, *, crc_delta: int = 0, len_delta: int = 0, stamp: str = "") -> bytes:
    body = f'"{kind}"{seq:04d}R0L0#{ACCOUNT}[]{stamp}'.encode()
    head = f"{(crc16_arc(body) + crc_delta) & 0xFFFF:04X}{len(body) + len_delta:04X}".encode()
    return b"\n" + head + body + b"\r"


def nak(when: datetime) -> bytes:
    return dc09_reply("NAK", 0, stamp=when.strftime("_%H:%M:%S,%m-%d-%Y"))


def alarm(zone: int) -> str:
    return encode_adm_cid(ContactIdEvent(None, 1, "101", "01", f"{zone:03d}"))


def transmitter(port: int, protocol: str = "tcp", timeout_s: float = 0.5, **kw: object) -> DC09Transmitter:
    return DC09Transmitter(
        TransmitterState(ACCOUNT),
        Dc09Path("127.0.0.1", port, protocol),
        timeout_s=timeout_s,
        **kw,  # type: ignore[arg-type]
    )


def held(tx: DC09Transmitter) -> int:
    """Bytes and frames the transmitter holds for its links now."""
    total = len(tx.refused)
    for link in tx._links.values():
        total += link.splitter.buffered + link.queue.qsize() + len(getattr(link, "junk", []))
    return total


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_dc09_random_bytes_before_a_valid_ack_are_refused_and_the_ack_still_matched(protocol: str) -> None:
    junk: list[bytes] = [b""]

    def serve(link: Link) -> None:
        while (frame := link.frame()) is not None:
            if junk[0]:
                link.send(junk[0])
            link.send(dc09_reply("ACK", dc09_seq(frame)))

    platform = Platform(serve, protocol)

    async def exchange(tx: DC09Transmitter, zone: int) -> tuple[bool, int, int]:
        before = len(tx.refused)
        result = await tx.send(ADM_CID, alarm(zone))
        return (
            result.acked and result.reply is not None and result.reply.sequence == result.message.sequence,
            (result.attempts),
            len(tx.refused) - before,
        )

    loop = asyncio.new_event_loop()
    tx = transmitter(platform.port, protocol)
    try:

        @FAST
        @given(st.binary(min_size=1, max_size=9000))
        def check(data: bytes) -> None:
            junk[0] = data
            acked, attempts, refused = loop.run_until_complete(exchange(tx, 1))
            assert acked and attempts == 1, data[:80]
            if data.strip(b"\r\n\x00 "):
                assert refused >= 1  # the junk was seen and reported, not ignored
            assert held(tx) <= 100 + 4096 + 64

        check()
        junk[0] = b""
        assert loop.run_until_complete(exchange(tx, 2))[0]
    finally:
        loop.run_until_complete(tx.close())
        loop.close()
        platform.close()


BROKEN = {
    "wrong CRC": lambda seq: dc09_reply("ACK", seq, crc_delta=1),
    "wrong LEN": lambda seq: dc09_reply("ACK", seq, len_delta=3),
    "sequence never sent": lambda seq: dc09_reply("ACK", (seq + 5000) % 9999 + 1),
    "an earlier sequence": lambda seq: dc09_reply("ACK", (seq - 2) % 9999 + 1),
    "a reply kind that is no reply": lambda seq: dc09_reply("SIA-DCS", seq),
    "non-ASCII": lambda seq: dc09_reply("ACK", seq)[:-2] + b"\xff\r",
}


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
@pytest.mark.parametrize("case", sorted(BROKEN))
def test_dc09_a_broken_reply_is_refused_and_the_resend_is_matched(protocol: str, case: str) -> None:
    """The first attempt is answered only with the broken reply: the transmitter refuses it, resends after its
    timeout, and matches the valid ACK to the resend."""

    frames: list[int] = []  # over the whole platform: a TCP resend comes on a new connection

    def serve(link: Link) -> None:
        while (frame := link.frame()) is not None:
            frames.append(dc09_seq(frame))
            link.send(BROKEN[case](frames[-1]) if len(frames) == 1 else dc09_reply("ACK", frames[-1]))

    platform = Platform(serve, protocol)

    async def main() -> None:
        async with transmitter(platform.port, protocol, timeout_s=0.3) as tx:
            t0 = time.monotonic()
            result = await tx.send(ADM_CID, alarm(7))
            took = time.monotonic() - t0
            assert result.acked and result.attempts == 2, result
            assert result.reply is not None and result.reply.sequence == result.message.sequence
            if case not in ("sequence never sent", "an earlier sequence"):
                assert len(tx.refused) == 1, tx.refused
            assert took < 0.3 * 2 + 1.0
            again = await tx.send(ADM_CID, alarm(8))
            assert again.acked and again.attempts == 1

    try:
        asyncio.run(main())
    finally:
        platform.close()


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_dc09_duplicated_and_unsolicited_replies_never_answer_a_later_alarm(protocol: str) -> None:
    def serve(link: Link) -> None:
        while (frame := link.frame()) is not None:
            seq = dc09_seq(frame)
            link.send(dc09_reply("ACK", seq) * 3 + dc09_reply("ACK", seq + 1) + dc09_reply("DUH", seq + 2))

    platform = Platform(serve, protocol)

    async def main() -> None:
        async with transmitter(platform.port, protocol) as tx:
            for zone in range(1, 6):
                result = await tx.send(ADM_CID, alarm(zone))
                assert result.acked and result.reply is not None, result
                assert result.reply.sequence == result.message.sequence and result.attempts == 1
            assert tx.counts["unmatched"] + tx.counts["stale"] >= 4 * 4  # each extra reply was seen and counted

    try:
        asyncio.run(main())
    finally:
        platform.close()


def test_dc09_a_reply_dribbled_byte_by_byte_is_matched_and_stamped_at_its_last_byte() -> None:
    def serve(link: Link) -> None:
        while (frame := link.frame()) is not None:
            for byte in dc09_reply("ACK", dc09_seq(frame)):
                link.send(bytes([byte]))
                time.sleep(0.004)

    platform = Platform(serve)

    async def main() -> None:
        async with transmitter(platform.port, timeout_s=3.0) as tx:
            result = await tx.send(ADM_CID, alarm(3))
            assert result.acked and result.round_trip_ns is not None
            pauses = len(dc09_reply("ACK", 1)) - 1  # time.sleep waits at least its time before each later byte
            assert result.round_trip_ns >= pauses * 0.004 * 1e9  # stamped at the last byte, not the first
            assert not tx.refused

    try:
        asyncio.run(main())
    finally:
        platform.close()


def test_dc09_an_endless_line_is_held_to_the_frame_bound_and_the_next_connection_works() -> None:
    """The first connection gets a frame start and then 8 MB without CR or LF; the transmitter must not
    buffer it, must give up on that connection at its timeout, and the resend on a new one is ACKed."""

    def serve(link: Link) -> None:
        frame = link.frame()
        if frame is None:
            return
        if link.index == 0:
            link.send(b"\n0000")
            chunk = b"A" * 65536
            with _quiet():
                for _ in range(128):
                    link.send(chunk)
            time.sleep(5)
            return
        while frame is not None:
            link.send(dc09_reply("ACK", dc09_seq(frame)))
            frame = link.frame()

    platform = Platform(serve)

    async def main() -> None:
        async with transmitter(platform.port, timeout_s=1.0) as tx:
            t0 = time.monotonic()
            result = await tx.send(ADM_CID, alarm(4))
            assert result.acked and result.attempts == 2, result
            assert time.monotonic() - t0 < 1.0 * 2 + 2.0
            assert held(tx) <= 100 + 4096 + 64
            assert all(len(raw) <= 4096 for raw, _ in tx.refused)

    try:
        asyncio.run(main())
    finally:
        platform.close()


def test_dc09_a_reset_mid_frame_fails_that_attempt_only() -> None:
    def serve(link: Link) -> None:
        frame = link.frame()
        if frame is None:
            return
        if link.index == 0:
            link.send(dc09_reply("ACK", dc09_seq(frame))[:12])
            time.sleep(0.05)
            reset(link.sock)
            return
        while frame is not None:
            link.send(dc09_reply("ACK", dc09_seq(frame)))
            frame = link.frame()

    platform = Platform(serve)

    async def main() -> None:
        async with transmitter(platform.port, timeout_s=2.0) as tx:
            t0 = time.monotonic()
            result = await tx.send(ADM_CID, alarm(5))
            assert result.acked and result.attempts == 2, result
            assert time.monotonic() - t0 < 2.0  # the reset ended the attempt at once, not its timeout

    try:
        asyncio.run(main())
    finally:
        platform.close()


def test_dc09_a_platform_that_never_reads_costs_a_bounded_wait_and_close_returns() -> None:
    stop = threading.Event()

    def serve(link: Link) -> None:
        stop.wait(10)  # accepts, never reads, never answers

    platform = Platform(serve, rcvbuf=4096)

    async def main() -> None:
        tx = transmitter(platform.port, timeout_s=0.3, retries=1)
        t0 = time.monotonic()
        result = await tx.send(ADM_CID, alarm(6))
        assert not result.acked and result.attempts == 2 and "no reply" in result.error
        assert time.monotonic() - t0 < 0.3 * 2 * 3
        # a link whose socket buffers are full (the platform reads nothing) still closes promptly
        link = await tx._link(tx.paths[0])
        link.write(b"x" * 8_000_000)
        t1 = time.monotonic()
        await asyncio.wait_for(tx.close(), 10)
        assert time.monotonic() - t1 < 3.0

    try:
        asyncio.run(main())
    finally:
        stop.set()
        platform.close()


def test_dc09_naks_forever_and_a_nak_from_year_9999_end_in_a_result_not_an_exception() -> None:
    """A platform that NAKs every frame gets max_naks resends and no more; one whose NAK carries a time at
    the end of the calendar leaves the transmitter able to stamp and send its next alarm."""
    mode = ["forever"]
    frames: list[int] = []

    def serve(link: Link) -> None:
        while (frame := link.frame()) is not None:
            frames.append(dc09_seq(frame))
            if mode[0] == "forever":
                link.send(nak(datetime.now(UTC)))
            elif mode[0] == "far" and len(frames) == 1:
                link.send(nak(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)))
            else:
                link.send(dc09_reply("ACK", dc09_seq(frame)))

    platform = Platform(serve)

    async def main() -> None:
        async with transmitter(platform.port, timeout_s=0.5, max_naks=2) as tx:
            result = await tx.send(ADM_CID, alarm(1))
            assert not result.acked and result.naks == 3 and len(frames) == 3, (result, frames)
        frames.clear()
        mode[0] = "far"
        async with transmitter(platform.port, timeout_s=0.5) as tx:
            first = await tx.send(ADM_CID, alarm(2))
            second = await tx.send(ADM_CID, alarm(3))
            assert second.acked, second
            assert first.acked or first.error
            assert tx.refused  # the absurd NAK was reported

    try:
        asyncio.run(main())
    finally:
        platform.close()


def test_dc09_a_flood_of_unsolicited_datagrams_stays_bounded_and_the_alarm_is_matched() -> None:
    flood_done = threading.Event()

    def serve(link: Link) -> None:
        frame = link.frame()
        assert frame is not None
        seq = dc09_seq(frame)
        for i in range(5000):  # junk, and ACKs for sequences never sent, from the platform's own address
            link.send(secrets.token_bytes(40) if i % 2 else dc09_reply("ACK", (seq + 1 + i) % 9999 + 1))
        flood_done.set()
        link.send(dc09_reply("ACK", seq))
        while (frame := link.frame()) is not None:
            link.send(dc09_reply("ACK", dc09_seq(frame)))

    platform = Platform(serve, "udp")

    async def main() -> None:
        async with transmitter(platform.port, "udp", timeout_s=2.0) as tx:
            result = await tx.send(ADM_CID, alarm(9))
            assert flood_done.is_set()
            assert result.acked and result.reply is not None and result.reply.sequence == result.message.sequence
            assert len(tx.refused) <= 100 and held(tx) <= 100 + 64
            again = await tx.send(ADM_CID, alarm(10))
            assert again.acked and again.attempts == 1

    try:
        asyncio.run(main())
    finally:
        platform.close()


# --- SCAIP over SIP: vtlab's device against a hostile centre ------------------------------------------

MRS = '<?xml version="1.0" encoding="UTF-8"?><mrs><ref>{ref}</ref><snu>0</snu></mrs>'
BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE mrs [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><mrs><ref>{ref}</ref><snu>0</snu><ste>&c;</ste></mrs>'
)


def sip_ok(h: dict[str, str], *, status: str = "200 OK", length: str | None = None) -> bytes:
    """A final response to the device's MESSAGE, copied from its headers as RFC 3261 8.2.6 says."""
    return (
        f"SIP/2.0 {status}\r\nVia: {h['via']}\r\nFrom: {h['from']}\r\nTo: {h['to']};tag=hostile\r\n"
        f"Call-ID: {h['call-id']}\r\nCSeq: {h['cseq']}\r\nContent-Length: {length or 0}\r\n\r\n"
    ).encode()


def sip_mrs(ref: str, transport: str, port: int, body: str = MRS) -> bytes:
    """The centre's own MESSAGE carrying an `<mrs>` back to the device."""
    xml = body.format(ref=ref).encode()
    branch = secrets.token_hex(8)
    return (
        f"MESSAGE sip:device@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport.upper()} 127.0.0.1:{port};branch=z9hG4bK{branch}"
        f"\r\nMax-Forwards: 70\r\nFrom: <sip:centre@127.0.0.1>;tag={branch}\r\nTo: <sip:device@127.0.0.1>\r\n"
        f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 MESSAGE\r\nContent-Type: application/scaip+xml\r\n"
        f"Content-Length: {len(xml)}\r\n\r\n"
    ).encode() + xml


def mrq_ref(body: bytes) -> str:
    m = re.search(rb"<ref>(\w+)</ref>", body)
    assert m, body
    return m.group(1).decode()


def sip_platform(
    answer: Callable[[Link, dict[str, str], str, int], None], transport: str = "udp", **kw: object
) -> Platform:
    """A centre that hands each `<mrq>` MESSAGE to `answer(link, headers, ref, n)` and ignores what else comes."""
    count = [0]

    def serve(link: Link) -> None:
        if kw.get("tls") is not None:
            link.sock = kw["tls"].wrap_socket(link.sock, server_side=True)  # type: ignore[attr-defined]
        while (msg := link.sip()) is not None:
            start, headers, body = msg
            if start.startswith("MESSAGE "):
                count[0] += 1
                answer(link, headers, mrq_ref(body), count[0])

    return Platform(serve, "udp" if transport == "udp" else "tcp")


async def device_send(
    port: int, transport: str, timeout: float = 2.0, mrs_timeout: float = 1.0, n: int = 1, **kw: object
):  # type: ignore[no-untyped-def]
    """Start a device, send `n` alarms (results or exceptions), return them with the device's refusals."""
    out: list[object] = []
    async with ScaipDevice(f"127.0.0.1:{port}", transport=transport, cid="4711", **kw) as dev:  # type: ignore[arg-type]
        for i in range(n):
            mrq = dev.mrq(dco=f"{i + 1:03d}")
            t0 = time.monotonic()
            try:
                result = await dev.send(mrq, timeout=timeout, mrs_timeout=mrs_timeout)
                out.append((mrq.ref, result, time.monotonic() - t0))
            except (ScaipSendError, TimeoutError) as exc:
                out.append((mrq.ref, exc, time.monotonic() - t0))
        return out, list(dev.refused), dev


def matched(entry: object) -> bool:
    ref, result, _ = entry  # type: ignore[misc]
    return getattr(result, "mrs", None) is not None and result.mrs.ref == ref  # type: ignore[attr-defined]


def test_scaip_random_datagrams_before_the_answer_are_refused_and_the_mrs_still_matched() -> None:
    junk: list[bytes] = [b""]

    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        link.send(junk[0])
        link.send(sip_ok(h))
        link.send(junk[0][::-1])
        link.send(sip_mrs(ref, "udp", link.sock.getsockname()[1]))

    platform = sip_platform(answer)
    loop = asyncio.new_event_loop()
    dev = ScaipDevice(f"127.0.0.1:{platform.port}", cid="4711")
    loop.run_until_complete(dev.start())
    try:

        @FAST
        @given(st.binary(min_size=1, max_size=2000))
        def check(data: bytes) -> None:
            junk[0] = data
            before = len(dev.refused)
            mrq = dev.mrq()
            result = loop.run_until_complete(dev.send(mrq, timeout=2.0, mrs_timeout=2.0))
            assert result.status == 200 and result.mrs is not None and result.mrs.ref == mrq.ref
            assert len(dev.refused) - before == 2  # each junk datagram reported once

        check()
    finally:
        loop.run_until_complete(dev.close())
        loop.close()
        platform.close()


@FAST
@given(st.binary(min_size=1, max_size=3000))
def test_scaip_random_bytes_on_a_stream_end_the_exchange_not_the_device(data: bytes) -> None:
    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        if n == 1:
            link.send(data)
        link.send(sip_ok(h) + sip_mrs(ref, "tcp", 5060))

    platform = sip_platform(answer, "tcp")
    try:
        out, refused, _ = asyncio.run(device_send(platform.port, "tcp", timeout=1.5, mrs_timeout=1.5, n=2))
    finally:
        platform.close()
    first, second = out
    assert matched(second), second  # a new exchange after the junk works
    if not matched(first):
        assert isinstance(first[1], (ScaipSendError, TimeoutError)) and refused
        assert first[2] < 1.5 + 1.5 + 1.0


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    import ssl

    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    return server, client_ssl_context(ca=pki.ca_cert)


def stream_kw(transport: str, tls: tuple[object, object]) -> tuple[dict[str, object], dict[str, object]]:
    if transport != "tls":
        return {}, {}
    return {"tls": tls[0]}, {"ssl_context": tls[1], "server_hostname": "localhost"}


HUGE = {
    "Content-Length 2 GB": lambda h: sip_ok(h, length="2147483648") + b"x" * 70000,
    "a gigantic header section": lambda h: b"SIP/2.0 200 OK\r\nX-Junk: " + b"y" * 1_000_000,
    "an endless CRLF keep-alive": lambda h: b"\r\n" * 300_000,
}


@pytest.mark.parametrize("transport", ["tcp", "tls"])
@pytest.mark.parametrize("case", sorted(HUGE))
def test_scaip_a_huge_or_endless_answer_is_cut_at_its_bound_and_the_next_alarm_works(
    transport: str, case: str, tls: tuple[object, object]
) -> None:
    platform_kw, device_kw = stream_kw(transport, tls)

    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        if n == 1:
            with _quiet():
                link.send(HUGE[case](h))
            return
        link.send(sip_ok(h) + sip_mrs(ref, transport, 5061))

    platform = sip_platform(answer, transport, **platform_kw)
    try:
        out, refused, dev = asyncio.run(device_send(platform.port, transport, timeout=2.0, n=2, **device_kw))
    finally:
        platform.close()
    first, second = out
    assert matched(second), second
    for conn in dev.wire._connections.values():
        assert conn.reader.buffered <= 16 * 1024 + 64 * 1024 + 65536
    if case == "an endless CRLF keep-alive":
        assert isinstance(first[1], TimeoutError) and first[2] < 2.0 * 1.5  # keep-alives are no answer
    else:
        assert isinstance(first[1], ScaipSendError) and first[2] < 2.0, first  # the connection was dropped at once
        assert any("bound" in r.reason or "over" in r.reason for r in refused), refused


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_scaip_an_mrs_with_a_dtd_or_entities_is_refused_unexpanded(transport: str) -> None:
    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        port = link.sock.getsockname()[1]
        link.send(sip_ok(h))
        link.send(sip_mrs(ref, transport, port, BILLION_LAUGHS))
        link.send(
            sip_mrs(
                ref,
                transport,
                port,
                '<!DOCTYPE mrs SYSTEM "file:///etc/passwd"><mrs><ref>{ref}</ref><snu>0</snu></mrs>',
            )
        )
        link.send(sip_mrs(ref, transport, port))

    platform = sip_platform(answer, transport)
    try:
        out, refused, _ = asyncio.run(device_send(platform.port, transport))
    finally:
        platform.close()
    assert matched(out[0])
    assert len(refused) == 2 and all(r.status == 400 for r in refused), refused


def test_scaip_mrs_for_unknown_refs_stay_bounded_and_an_early_mrs_is_still_matched() -> None:
    """2000 `<mrs>` for refs never sent, then an exchange whose `<mrs>` overtakes the 200 OK."""
    flood = [True]

    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        port = link.sock.getsockname()[1]
        if n == 1:
            for i in range(2000):
                link.send(sip_mrs(f"unknown{i}", "udp", port))
            link.send(sip_ok(h) + b"")
            flood[0] = False
            return
        link.send(sip_mrs(ref, "udp", port))  # the <mrs> first, the 200 OK after it
        time.sleep(0.05)
        link.send(sip_ok(h))

    platform = sip_platform(answer)
    try:
        out, _refused, dev = asyncio.run(device_send(platform.port, "udp", mrs_timeout=3.0, n=2))
    finally:
        platform.close()
    assert not flood[0]
    assert matched(out[1]), out[1]
    assert len(dev._early) <= 1000


def test_scaip_a_flood_of_unsolicited_junk_datagrams_keeps_the_refusals_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from harness.transports import sip

    monkeypatch.setattr(sip, "KEPT", 100)

    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        if n == 1:  # the kernel may drop the answer behind the flood: the MESSAGE's retransmission recovers
            for i in range(600):
                link.send(secrets.token_bytes(200) if i % 3 else b"SIP/2.0 200 OK\r\n\r\n")
                if i % 50 == 49:
                    time.sleep(0.002)  # within what a socket buffer takes: the flood must reach the device
        link.send(sip_ok(h))
        link.send(sip_mrs(ref, "udp", link.sock.getsockname()[1]))

    platform = sip_platform(answer)
    try:
        out, refused, dev = asyncio.run(device_send(platform.port, "udp", mrs_timeout=3.0, n=2))
    finally:
        platform.close()
    assert matched(out[0]) and matched(out[1])
    assert len(refused) <= 100 and dev.wire.received > 150  # refusals were kept to their bound


@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_scaip_an_answer_dribbled_byte_by_byte_and_duplicated_is_matched_once(
    transport: str, tls: tuple[object, object]
) -> None:
    platform_kw, device_kw = stream_kw(transport, tls)

    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        wire = sip_ok(h) * 2 + sip_mrs(ref, transport, 5060) * 2
        for i in range(0, len(wire), 7):
            link.send(wire[i : i + 7])
            time.sleep(0.001)

    platform = sip_platform(answer, transport, **platform_kw)
    try:
        out, refused, _ = asyncio.run(device_send(platform.port, transport, n=2, **device_kw))
    finally:
        platform.close()
    assert all(matched(e) for e in out) and not refused


def test_scaip_a_reset_mid_answer_fails_that_alarm_at_once_and_the_next_works() -> None:
    def answer(link: Link, h: dict[str, str], ref: str, n: int) -> None:
        if n == 1:
            link.send(sip_ok(h)[:40])
            time.sleep(0.05)
            reset(link.sock)
            return
        link.send(sip_ok(h) + sip_mrs(ref, "tcp", 5060))

    platform = sip_platform(answer, "tcp")
    try:
        out, _, _ = asyncio.run(device_send(platform.port, "tcp", timeout=5.0, n=2))
    finally:
        platform.close()
    assert isinstance(out[0][1], ScaipSendError) and out[0][2] < 1.0, out[0]
    assert matched(out[1])


def test_scaip_a_centre_that_never_reads_costs_the_timeout_and_a_bounded_buffer() -> None:
    stop = threading.Event()

    def serve(link: Link) -> None:
        stop.wait(10)

    platform = Platform(serve, rcvbuf=4096)

    async def main() -> None:
        async with ScaipDevice(f"127.0.0.1:{platform.port}", transport="tcp", cid="4711") as dev:
            big = dev.mrq(crd="sip:" + "a" * 240 + "@example.org")
            t0 = time.monotonic()
            for _ in range(3):
                with pytest.raises((TimeoutError, ScaipSendError)):
                    await dev.send(dev.mrq(), timeout=0.3, mrs_timeout=0.1)
            assert time.monotonic() - t0 < 0.3 * 3 * 3
            dev.wire.handle(dev.core.send_mrq(big, dev.target_uri, dev.next_hop, time.monotonic_ns()))  # type: ignore[union-attr]
            await asyncio.sleep(0.1)
            for _ in range(400):  # 26 MB to a platform that reads nothing: what waits must stay bounded
                dev.wire.handle([Transmit(b"\r\n" * 32768, dev.next_hop)])
            await asyncio.sleep(0.1)
            assert dev.wire.backlog_resets >= 1
            for conn in dev.wire._connections.values():
                assert conn.transport is None or conn.transport.get_write_buffer_size() <= 1_100_000
            t1 = time.monotonic()
        assert time.monotonic() - t1 < 3.0

    try:
        asyncio.run(main())
    finally:
        stop.set()
        platform.close()
