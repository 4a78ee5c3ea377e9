"""SCAIP over real sockets against independent SIP peers: SIPp as device and as response centre, kamailio
as a proxy between vtlab's device and receiver (UDP and TCP), and TLS with certificates made here.

SIPp's scenarios live in tests/integration/sipp/. Each server binds 127.0.0.1 on a free port and is
stopped by its test. A missing sipp or kamailio skips locally and fails under CI (tools/bootstrap.py
installs both from tools/system-packages.txt).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness.protocols import scaip
from harness.protocols.scaip import MessageType, Mrq, StatusNumber
from harness.protocols.scaip_sip import Credentials
from harness.protocols.sip import Timers
from harness.transports.sip import (
    ScaipDevice,
    ScaipReceiver,
    ScaipSendError,
    client_ssl_context,
    server_ssl_context,
)

SIPP_DIR = Path(__file__).parent / "sipp"
KAMAILIO_MODULES = (
    "/usr/lib/x86_64-linux-gnu/kamailio/modules",
    "/usr/lib/kamailio/modules",
    "/usr/local/lib64/kamailio/modules",
)
T = TypeVar("T")


def need(tool: str) -> str:
    """The tool's path; skip without it locally, fail under CI."""
    path = shutil.which(tool)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required in CI (tools/system-packages.txt) but is not installed")
        pytest.skip(f"{tool} is not installed (Debian: see tools/system-packages.txt)")
    return path


def run(coro: Callable[[], Awaitable[T]], timeout: float = 30) -> T:
    return asyncio.run(asyncio.wait_for(coro(), timeout))  # type: ignore[arg-type]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIPp and kamailio bind both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
        with socket.socket(socket.AF_INET, other) as s2:
            try:
                s2.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


# --- vtlab against itself over real sockets ------------------------------------------------------


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_device_and_receiver_exchange_with_arrival_stamps(transport: str) -> None:
    async def main() -> None:
        async with (
            ScaipReceiver(transport=transport) as rc,
            ScaipDevice(rc.address, transport=transport, cid="4711") as dev,
        ):
            results = [await dev.send(dev.mrq(stc="0010", did=f"btn{i}")) for i in range(5)]
            await rc.wait_for(lambda r: len(r.delivered) == 5, 5)
        assert [r.mrs.ref for r in results if r.mrs] == [r.mrq.ref for r in results]
        assert all(r.status == 200 and r.carrier == "MESSAGE" and r.mrs and r.mrs.ok for r in results)
        by_ref = {a.mrq.ref: a for a in rc.arrivals}
        for r in results:
            arrival = by_ref[r.mrq.ref]
            assert arrival.mrq == r.mrq
            # one monotonic clock: sent <= arrived at the centre <= 200 OK back <= <mrs> back
            assert r.sent_ns <= arrival.arrived_ns <= r.answered_ns <= r.mrs_ns  # type: ignore[operator]
        assert rc.refused == [] and len(rc.delivered) == 5

    run(main)


def test_callback_decides_the_reply_and_none_means_no_mrs() -> None:
    async def main() -> None:
        def decide(mrq: Mrq, arrived_ns: int, peer: tuple[str, int]) -> scaip.Mrs | None:
            if mrq.stc == "0016":
                return None
            return scaip.reply_for(mrq, StatusNumber.BUSY, mre=scaip.MediaReply.SPEAKER_ONLY)

        async def decide_async(mrq: Mrq, arrived_ns: int, peer: tuple[str, int]) -> scaip.Mrs | None:
            await asyncio.sleep(0)
            return decide(mrq, arrived_ns, peer)

        for callback in (decide, decide_async):
            async with ScaipReceiver(on_message=callback) as rc, ScaipDevice(rc.address) as dev:
                busy = await dev.send(dev.mrq(stc="0010"))
                assert busy.mrs is not None and busy.mrs.snu is StatusNumber.BUSY
                assert busy.mrs.mre is scaip.MediaReply.SPEAKER_ONLY
                silent = await dev.send(dev.mrq(stc="0016"), mrs_timeout=0.3)
                assert silent.status == 200 and silent.mrs is None

    run(main)


def test_heartbeats_are_pi_messages_at_the_interval() -> None:
    async def main() -> None:
        async with ScaipReceiver() as rc, ScaipDevice(rc.address, cid="99") as dev:
            task = dev.start_heartbeats(0.05, count=4)
            await asyncio.wait_for(task, 10)
        assert len(dev.heartbeats) == 4 and all(not isinstance(h, BaseException) for h in dev.heartbeats)
        assert [a.mrq.mty for a in rc.arrivals] == [MessageType.HEARTBEAT] * 4
        assert all(a.mrq.stc is None for a in rc.arrivals)

    run(main)


def test_digest_between_device_and_receiver() -> None:
    async def main() -> None:
        async with ScaipReceiver(auth=("vtlab", {"4711": "pw"}.get)) as rc:
            async with ScaipDevice(rc.address, cid="4711", credentials=Credentials("4711", "pw")) as dev:
                ok = await dev.send(dev.mrq())
                assert ok.authenticated and ok.mrs is not None
            async with ScaipDevice(rc.address, cid="4711") as anonymous:
                with pytest.raises(ScaipSendError) as info:
                    await anonymous.send(anonymous.mrq())
                assert info.value.status == 401
        assert len(rc.arrivals) == 1

    run(main)


def test_no_centre_fails_over_udp_after_timer_f_and_at_once_over_tcp() -> None:
    async def main() -> None:
        port = free_port(socket.SOCK_DGRAM)
        fast = Timers(t1_ns=10_000_000, t2_ns=40_000_000, t4_ns=50_000_000)
        async with ScaipDevice(f"127.0.0.1:{port}", timers=fast) as dev:
            started = time.monotonic()
            with pytest.raises(ScaipSendError, match="Timer F"):
                await dev.send(dev.mrq(), timeout=10)
            assert time.monotonic() - started >= 0.64  # 64*T1 with T1 = 10 ms
        async with ScaipDevice(f"127.0.0.1:{free_port()}", transport="tcp") as dev:
            with pytest.raises(ScaipSendError, match="transport error"):
                await dev.send(dev.mrq(), timeout=10)

    run(main)


def test_receiver_survives_garbage_and_keeps_serving() -> None:
    async def main() -> None:
        reasons: list[str] = []
        async with ScaipReceiver(transport="udp", on_refused=lambda raw, why: reasons.append(why)) as udp:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.setblocking(False)
                for junk in (
                    b"\x00" * 10,
                    b"GET / HTTP/1.1\r\n\r\n",
                    os.urandom(300),
                    b"MESSAGE sip:x SIP/2.0\r\n\r\n",
                ):
                    await loop.sock_sendto(raw, junk, ("127.0.0.1", udp.port))
            await udp.wait_for(lambda r: len(r.refused) == 4, 5)
            async with ScaipDevice(udp.address) as dev:
                assert (await dev.send(dev.mrq())).mrs is not None
        assert len(reasons) == 4

        # a well-formed MESSAGE whose <mrq> breaks the code list: 200 OK, then an <mrs> with snu 3
        async with ScaipReceiver(transport="udp", on_refused=lambda raw, why: reasons.append(why)) as udp:
            body = b"<mrq><ref>bad1</ref><cid>4711</cid><dty>0003</dty><mty>ZZ</mty></mrq>"
            message = (
                f"MESSAGE sip:scaip@{udp.address} SIP/2.0\r\nVia: SIP/2.0/UDP {{me}};branch=z9hG4bKbad1\r\n"
                f"From: <sip:4711@{{me}}>;tag=1\r\nTo: <sip:scaip@{udp.address}>\r\nCall-ID: bad1@x\r\n"
                f"CSeq: 1 MESSAGE\r\nContent-Type: application/scaip+xml\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
                raw.bind(("127.0.0.1", 0))
                raw.setblocking(False)
                me = "{}:{}".format(*raw.getsockname())
                await loop.sock_sendto(raw, message.format(me=me).encode() + body, ("127.0.0.1", udp.port))
                answers = [await asyncio.wait_for(loop.sock_recv(raw, 65536), 5) for _ in range(2)]
            assert answers[0].startswith(b"SIP/2.0 200 OK\r\n")
            assert answers[1].startswith(b"MESSAGE sip:4711@") and b"<snu>3</snu>" in answers[1]
            assert "mty" in reasons[-1] and udp.arrivals == []

        async with ScaipReceiver(transport="tcp") as tcp:
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp.port)
            writer.write(b"MESSAGE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length: framing lost
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # the centre closed that connection
            writer.close()
            async with ScaipDevice(tcp.address, transport="tcp") as dev:
                assert (await dev.send(dev.mrq())).mrs is not None
            assert len(tcp.refused) == 1 and "Content-Length" in tcp.refused[0].reason

    run(main)


# --- TLS ------------------------------------------------------------------------------------------


def _pem(obj: Any) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    signer: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a centre certificate for 127.0.0.1/localhost, a device certificate, and a stranger CA."""
    out: dict[str, Path] = {}
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("vtlab test CA", ca_key, None, ca_key, ca=True)
    for role in ("centre", "device"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(f"vtlab {role}", key, ca.subject, ca_key, ca=False)
        (tmp_path / f"{role}.pem").write_bytes(_pem(cert))
        (tmp_path / f"{role}.key").write_bytes(_key_pem(key))
        out[role], out[f"{role}_key"] = tmp_path / f"{role}.pem", tmp_path / f"{role}.key"
    (tmp_path / "ca.pem").write_bytes(_pem(ca))
    other_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "other-ca.pem").write_bytes(_pem(_cert("stranger CA", other_key, None, other_key, ca=True)))
    out["ca"], out["other_ca"] = tmp_path / "ca.pem", tmp_path / "other-ca.pem"
    return out


def test_tls_device_and_receiver_with_mutual_authentication(pki: dict[str, Path]) -> None:
    async def main() -> None:
        server = server_ssl_context(pki["centre"], pki["centre_key"], ca=pki["ca"], require_client_cert=True)
        async with ScaipReceiver(transport="tls", ssl_context=server) as rc:
            trusted = client_ssl_context(ca=pki["ca"], cert=pki["device"], key=pki["device_key"])
            async with ScaipDevice(rc.address, transport="tls", ssl_context=trusted, cid="4711") as dev:
                results = [await dev.send(dev.mrq()) for _ in range(3)]
                assert all(r.mrs is not None and r.mrs.ok for r in results)
            # the device does not trust the centre: no TLS session, no message
            stranger = client_ssl_context(ca=pki["other_ca"], cert=pki["device"], key=pki["device_key"])
            async with ScaipDevice(rc.address, transport="tls", ssl_context=stranger) as dev:
                with pytest.raises(ScaipSendError, match="transport error"):
                    await dev.send(dev.mrq(), timeout=10)
            # the centre demands a device certificate
            anonymous = client_ssl_context(ca=pki["ca"])
            async with ScaipDevice(rc.address, transport="tls", ssl_context=anonymous) as dev:
                with pytest.raises(ScaipSendError, match="transport error"):
                    await dev.send(dev.mrq(), timeout=10, mrs_timeout=None)
            assert len(rc.arrivals) == 3

    run(main)


def test_tls_context_refuses_to_verify_nothing_by_default(pki: dict[str, Path]) -> None:
    ctx = client_ssl_context(ca=pki["ca"])
    assert ctx.verify_mode is ssl.CERT_REQUIRED and ctx.check_hostname
    assert client_ssl_context(verify=False).verify_mode is ssl.CERT_NONE


# --- SIPp -----------------------------------------------------------------------------------------


def _sipp(tmp_path: Path, *args: str) -> list[str]:
    sipp = need("sipp")
    for f in SIPP_DIR.glob("*.xml"):
        shutil.copy(f, tmp_path / f.name)
    return [sipp, *args, "-i", "127.0.0.1", "-nostdin", "-timeout", "15s", "-timeout_error", "-trace_msg", "-trace_err"]


async def _run_sipp(cmd: list[str], cwd: Path, timeout: float = 20) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    logs = "".join(p.read_text(errors="replace")[-3000:] for p in sorted(cwd.glob("*.log")))
    return proc.returncode or 0, out.decode(errors="replace")[-2000:] + logs


@pytest.mark.parametrize(("transport", "mode"), [("udp", "u1"), ("tcp", "t1")])
def test_sipp_device_to_vtlab_receiver(tmp_path: Path, transport: str, mode: str) -> None:
    async def main() -> None:
        async with ScaipReceiver(transport=transport) as rc:
            cmd = _sipp(tmp_path, "-sf", "scaip_uac.xml", "-oocsf", "scaip_mrs_ooc.xml", f"127.0.0.1:{rc.port}",
                        "-t", mode, "-m", "2", "-p", str(free_port()), "-key", "cid", "4711")  # fmt: skip
            rc_code, log = await _run_sipp(cmd, tmp_path)
            assert rc_code == 0, log
            await rc.wait_for(lambda r: len(r.delivered) == 2, 5)
        assert sorted(a.mrq.ref for a in rc.arrivals) == ["sipp1", "sipp2"]
        assert all(a.mrq.cid == "4711" and a.mrq.device_type_name == "personal trigger" for a in rc.arrivals)
        # SIPp's out-of-call scenario checked each <mrs> (ref sippN, snu 0) and answered it 200
        assert sorted((d.ref, d.status) for d in rc.delivered) == [("sipp1", 200), ("sipp2", 200)]
        assert rc.refused == []

    run(main)


def test_sipp_digest_md5_against_vtlab_receiver(tmp_path: Path) -> None:
    """SIPp computes its own MD5 digest; vtlab's verification must accept it (and challenge first)."""

    async def main() -> None:
        async with ScaipReceiver(auth=("vtlab", {"4711": "s3cret"}.get)) as rc:
            cmd = _sipp(tmp_path, "-sf", "scaip_uac_auth.xml", f"127.0.0.1:{rc.port}", "-t", "u1", "-m", "1",
                        "-p", str(free_port()), "-key", "cid", "4711", "-au", "4711", "-ap", "s3cret")  # fmt: skip
            rc_code, log = await _run_sipp(cmd, tmp_path)
            assert rc_code == 0, log
            assert "401 Unauthorized" in log
        assert [a.mrq.ref for a in rc.arrivals] == ["sippauth1"]

    run(main)


@pytest.mark.parametrize(("transport", "mode"), [("udp", "u1"), ("tcp", "t1")])
def test_vtlab_device_to_sipp_centre(tmp_path: Path, transport: str, mode: str) -> None:
    async def main() -> None:
        port = free_port()
        cmd = _sipp(tmp_path, "-sf", "scaip_uas.xml", "-t", mode, "-m", "3", "-p", str(port))
        sipp = asyncio.create_task(_run_sipp(cmd, tmp_path))
        await _wait_listening(port, transport)
        async with ScaipDevice(f"127.0.0.1:{port}", transport=transport, cid="4711") as dev:
            results = [await dev.send(dev.mrq(), mrs_timeout=5) for _ in range(3)]
        rc_code, log = await sipp
        assert rc_code == 0, log
        for r in results:
            assert r.status == 200 and r.carrier == "MESSAGE" and r.mrs is not None, log
            assert r.mrs.ref == r.mrq.ref and r.mrs.snu is StatusNumber.OK and r.mrs.hbi == 2
            assert r.mrs.mre is scaip.MediaReply.DUPLEX and r.mrs.cre is scaip.CallHandlingReply.PREDEFINED_RECEIVER

    run(main)


def test_vtlab_device_takes_mrs_from_sipp_200_body(tmp_path: Path) -> None:
    async def main() -> None:
        port = free_port()
        cmd = _sipp(tmp_path, "-sf", "scaip_uas_200body.xml", "-t", "u1", "-m", "2", "-p", str(port))
        sipp = asyncio.create_task(_run_sipp(cmd, tmp_path))
        await _wait_listening(port, "udp")
        async with ScaipDevice(f"127.0.0.1:{port}") as dev:
            results = [await dev.send(dev.mrq(), mrs_timeout=5) for _ in range(2)]
        rc_code, log = await sipp
        assert rc_code == 0, log
        assert [(r.carrier, r.mrs.snu if r.mrs else None) for r in results] == [("200", StatusNumber.HOLD)] * 2
        assert all(r.mrs and r.mrs.ref == r.mrq.ref for r in results)

    run(main)


async def _wait_listening(port: int, transport: str, timeout: float = 5) -> None:
    """Wait until a peer listens on `port` (TCP: it accepts; UDP: the port is bound)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if transport == "tcp":
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return  # bound by the peer
        await asyncio.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}/{transport}")


# --- kamailio as a proxy --------------------------------------------------------------------------

KAMAILIO_CFG = """#!KAMAILIO
# A stateful SIP proxy for vtlab's tests: relays MESSAGE by Request-URI, both ways.
debug=2
log_stderror=yes
children=1
tcp_children=1
auto_aliases=no
enable_sctp=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
mpath="{modules}"
loadmodule "sl.so"
loadmodule "tm.so"
loadmodule "maxfwd.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "textops.so"

request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (is_method("MESSAGE")) {{
        xlog("L_NOTICE", "vtlab-relay $rm $ru from $si:$sp\\n");
        if (!t_relay()) {{ sl_reply_error(); }}
        exit;
    }}
    sl_send_reply("405", "Method Not Allowed");
}}
"""


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """kamailio in the foreground on a free loopback port (UDP and TCP); its log file is returned too."""
    binary = need("kamailio")
    modules = next((m for m in KAMAILIO_MODULES if Path(m, "tm.so").exists()), None)
    if modules is None:
        if os.environ.get("CI"):
            pytest.fail("kamailio modules (tm.so) not found")
        pytest.skip("kamailio modules (tm.so) not found")
    port = free_port()
    cfg = tmp_path / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port, modules=modules))
    log = tmp_path / "kamailio.log"
    with log.open("wb") as out:
        # -DD: stay in the foreground (no daemon), -E: log to stderr; -Y/-P/-w keep its files in tmp_path
        argv = [
            binary,
            "-f",
            str(cfg),
            "-DD",
            "-E",
            "-Y",
            str(tmp_path),
            "-P",
            str(tmp_path / "k.pid"),
            "-w",
            str(tmp_path),
        ]
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                pytest.fail(f"kamailio exited at start:\n{log.read_text(errors='replace')[-3000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"kamailio did not listen:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield port, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_kamailio_proxy_between_device_and_receiver(kamailio: tuple[int, Path], transport: str) -> None:
    proxy_port, log = kamailio

    async def main() -> None:
        proxy = f"127.0.0.1:{proxy_port}"
        async with (
            ScaipReceiver(transport=transport) as rc,
            ScaipDevice(rc.address, transport=transport, cid="4711", proxy=proxy) as dev,
        ):
            results = [await dev.send(dev.mrq(), timeout=10, mrs_timeout=5) for _ in range(3)]
            await rc.wait_for(lambda r: len(r.delivered) == 3, 5)  # the device's 200s to the <mrs>, via the proxy
        assert all(r.status == 200 and r.mrs is not None and r.mrs.ref == r.mrq.ref for r in results)
        # the centre saw the proxy, not the device: the request really went through kamailio
        assert {a.peer[1] for a in rc.arrivals} != {dev.local.port}
        assert len(rc.delivered) == 3 and all(d.status == 200 for d in rc.delivered)

    run(main)
    text = log.read_text(errors="replace")
    assert text.count("vtlab-relay MESSAGE sip:scaip@") == 3  # mrq, device -> centre
    assert text.count("vtlab-relay MESSAGE sip:4711@") == 3  # mrs, centre -> device
