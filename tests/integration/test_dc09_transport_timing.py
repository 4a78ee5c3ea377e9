"""What keeps DC-09 latency honest on real sockets: one TCP connection kept for many messages, TCP_NODELAY on
both ends (a small frame never waits for a delayed ACK), and an arrival stamped when its bytes came off the
socket, not when the reading coroutine got its turn of the loop."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime

from harness.protocols.contact_id import ContactIdEvent, encode_adm_cid
from harness.protocols.dc09 import ADM_CID, Account, Decision, TransmitterState
from harness.transports.dc09 import DC09Receiver, DC09Transmitter, Path


def _nodelay(sock: socket.socket) -> bool:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_the_transmitter_keeps_one_connection_with_nodelay_on_both_ends() -> None:
    async def main() -> None:
        peers: list[tuple[str, int]] = []

        def on_message(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
            peers.append(peer)

        async with DC09Receiver([Account("1234")], on_message, udp=False) as rx:
            path = Path("127.0.0.1", rx.port)
            async with DC09Transmitter(TransmitterState("1234"), path, timeout_s=5) as tx:
                for zone in range(1, 21):
                    result = await tx.send(ADM_CID, encode_adm_cid(ContactIdEvent(None, 1, "101", "01", f"{zone:03d}")))
                    assert result.acked, result.error
                link = tx._links[path]  # the transmitter's kept connection
                assert link.writer is not None
                assert _nodelay(link.writer.get_extra_info("socket"))
                (accepted,) = rx._connections.values()  # the receiver's side of it
                assert _nodelay(accepted.get_extra_info("socket"))
        assert len(peers) == 20 and len(set(peers)) == 1, set(peers)

    asyncio.run(main())


def test_a_dc09_frame_is_stamped_when_its_bytes_arrive_not_when_the_reader_wakes() -> None:
    """A frame and a datagram reach one loop in the same poll, the frame first; the datagram's handler then
    holds the loop for 200 ms. The frame's stamp must come before that handler, although the coroutine that
    reads the frame only runs after it."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stamps: list[int] = []
        busy: dict[str, int] = {}

        def on_message(decision: Decision, arrived_ns: int, peer: tuple[str, int], sent: bytes) -> None:
            stamps.append(arrived_ns)

        class Busy(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                busy["start"] = time.monotonic_ns()
                time.sleep(0.2)  # other work on the same loop (another receiver, a callback)
                busy["end"] = time.monotonic_ns()

        udp, _ = await loop.create_datagram_endpoint(Busy, local_addr=("127.0.0.1", 0))
        async with DC09Receiver([Account("1234")], on_message, udp=False) as rx:
            frame = TransmitterState("1234").encode(
                TransmitterState("1234").message(
                    ADM_CID, encode_adm_cid(ContactIdEvent(None, 1, "101", "01", "007")), datetime.now(UTC)
                )
            )
            with (
                socket.create_connection(("127.0.0.1", rx.port)) as tcp,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as kick,
            ):
                for _ in range(100):  # until the receiver has accepted and waits in its read
                    if rx._connections:
                        break
                    await asyncio.sleep(0.01)
                # both sent while this coroutine holds the loop: both sockets are ready at its next poll
                tcp.sendall(frame)
                time.sleep(0.02)
                kick.sendto(b"x", udp.get_extra_info("sockname"))
                for _ in range(300):
                    if stamps:
                        break
                    await asyncio.sleep(0.01)
                tcp.recv(1024)  # the ACK
        udp.close()
        assert stamps and "end" in busy
        assert stamps[0] < busy["start"], (stamps[0] - busy["start"]) / 1e6

    asyncio.run(main())
