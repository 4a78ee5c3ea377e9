"""Start and stop a real MQTT broker on a free loopback port: mosquitto, or amqtt in its own process.

    with start_broker(tmp_path) as broker:
        client.connect("127.0.0.1", broker.port)

No orphans: brokers are killed on stop(), at interpreter exit (atexit), and, when started from the
main thread on Linux, by the kernel if this process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from harness.errors import InputError, TargetError
from harness.lab.config import AccessRule
from harness.pki import TlsFiles

__all__ = [
    "AccessRule",
    "BrokerKind",
    "RunningBroker",
    "TlsFiles",
    "amqtt_acl_spec",
    "dynsec_config",
    "find_dynsec",
    "find_mosquitto",
    "free_port",
    "mosquitto_acl",
    "start_broker",
]

BrokerKind = Literal["auto", "mosquitto", "amqtt"]

_LIVE: set[subprocess.Popen[bytes]] = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_live() -> None:
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        _kill(p)


atexit.register(_kill_all_live)


def _kill(proc: subprocess.Popen[bytes], grace_s: float = 3.0) -> None:
    if proc.poll() is None:
        try:
            proc.terminate()
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)
        except ProcessLookupError:
            pass
    with _LIVE_LOCK:
        _LIVE.discard(proc)


def _preexec_factory() -> Callable[[], None] | None:
    """Ask the kernel to SIGTERM the child when the forking thread dies (Linux, main thread only)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None

    def _set_pdeathsig() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return _set_pdeathsig


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_mosquitto() -> str | None:
    """The mosquitto binary; VTLAB_MOSQUITTO names another one, or `none` to act as if it were absent."""
    override = os.environ.get("VTLAB_MOSQUITTO")
    if override:
        return None if override.lower() == "none" else override
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in (
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/opt/homebrew/sbin/mosquitto",
    ):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_dynsec() -> str | None:
    """mosquitto's dynamic-security plugin (it refuses forbidden subscriptions with SUBACK 0x87; the plain
    acl_file grants them and silently delivers nothing). VTLAB_MOSQUITTO_DYNSEC names another file, or
    `none` to use the acl_file."""
    override = os.environ.get("VTLAB_MOSQUITTO_DYNSEC")
    if override:
        return None if override.lower() == "none" else override
    import glob

    for pattern in (
        "/usr/lib/*/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
        "/opt/homebrew/lib/mosquitto_dynamic_security.so",
    ):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


def _grouped(rules: Sequence[AccessRule]) -> dict[str, list[AccessRule]]:
    by: dict[str, list[AccessRule]] = {}
    for r in rules:
        if any(c in r.identity + r.topic_filter for c in "\n\r\x00") or " " in r.identity:
            raise InputError(f"access rule for `{r.identity[:60]}` holds a line break or space", place="broker ACL")
        by.setdefault(r.identity, []).append(r)
    return by


def mosquitto_acl(rules: Sequence[AccessRule]) -> str:
    """The rules as a mosquitto acl_file: a `user` block per identity, `topic write|read` lines."""
    lines = ["# vtlab reference lab: each identity (certificate CN) gets its own topics and nothing else"]
    for identity, own in _grouped(rules).items():
        lines.append(f"user {identity}")
        lines += [f"topic {'write' if r.access == 'publish' else 'read'} {r.topic_filter}" for r in own]
    return "\n".join(lines) + "\n"


def dynsec_config(rules: Sequence[AccessRule]) -> dict[str, Any]:
    """The rules as the dynamic-security plugin's JSON: one client and one role per identity."""
    clients, roles = [], []
    for identity, own in _grouped(rules).items():
        acls: list[dict[str, Any]] = []
        for r in own:
            if r.access == "publish":
                acls.append({"acltype": "publishClientSend", "topic": r.topic_filter, "allow": True})
            else:
                acls.append({"acltype": "subscribePattern", "topic": r.topic_filter, "allow": True})
                acls.append({"acltype": "publishClientReceive", "topic": r.topic_filter, "allow": True})
        clients.append({"username": identity, "roles": [{"rolename": f"vtlab-{identity}"}]})
        roles.append({"rolename": f"vtlab-{identity}", "acls": acls})
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def amqtt_acl_spec(rules: Sequence[AccessRule]) -> dict[str, dict[str, list[str]]]:
    """The rules for harness.lab._amqtt_acl: {"publish": {identity: [filters]}, "subscribe": {...}}."""
    spec: dict[str, dict[str, list[str]]] = {"publish": {}, "subscribe": {}}
    for identity, own in _grouped(rules).items():
        for r in own:
            spec[r.access].setdefault(identity, []).append(r.topic_filter)
    return spec


@dataclass(slots=True)
class RunningBroker:
    """A broker process. Use as a context manager, or call stop()."""

    kind: Literal["mosquitto", "amqtt"]
    port: int
    tls: bool
    process: subprocess.Popen[bytes]
    log_path: Path
    started_in_s: float
    access_control: str = "none"
    """How access rules are enforced: `dynsec` (mosquitto plugin), `acl_file` (mosquitto), `amqtt-acl`, `none`."""
    client_ids_bound: bool = False
    """The client id is the certificate's CN (use_username_as_clientid): no session takeover by another identity."""

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        _kill(self.process)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _logged(log_path: Path, marker: bytes) -> bool:
    try:
        return marker in log_path.read_bytes()
    except OSError:
        return False


def _wait_ready(proc: subprocess.Popen[bytes], port: int, deadline: float, log_path: Path, marker: bytes) -> bool:
    """True once the broker logged `marker` (it has loaded its whole config: mosquitto opens its listener
    before it loads the TLS files, and exits if they are bad) and the port accepts TCP connections;
    False if the process died or the deadline passed."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if _logged(log_path, marker):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                pass
        # not ready yet: wait for the process to exit, at most a moment, then look again
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.02)
    return False


def _mosquitto_conf(
    workdir: Path,
    port: int,
    tls: TlsFiles | None,
    acl: str | Iterable[str] | None,
    users: Mapping[str, str] | None,
    opts: _Options,
) -> Path:
    lines = [
        f"listener {port} 127.0.0.1",
        "persistence false",
        "set_tcp_nodelay true",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "max_queued_messages 100000",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # mosquitto started as root drops to user `mosquitto`, which cannot read our private files
        lines.append(f"user {pwd.getpwuid(os.getuid()).pw_name}")
    if tls:
        lines += [
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
        ]
        if tls.require_certificate:
            lines.append("use_identity_as_username true")
            if opts.bind_client_ids:
                lines.append("use_username_as_clientid true")  # the certificate's CN is the client id
        if opts.tls_version is not None:
            lines.append(f"tls_version tlsv{opts.tls_version}")
        ciphers = opts.ciphers
        if ciphers is None and opts.tls_version in ("1", "1.1"):
            ciphers = "DEFAULT:@SECLEVEL=0"  # OpenSSL 3 refuses TLS < 1.2 above security level 0
        if ciphers is not None:
            lines.append(f"ciphers {ciphers}")
    if users:
        pw = workdir / "passwd"
        pw.write_text("")
        pw.chmod(0o600)
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        for name, password in users.items():
            r = subprocess.run(
                [tool, "-b", str(pw), name, password],
                capture_output=True,
                timeout=10,
                check=False,
            )
            if r.returncode != 0:
                raise TargetError(
                    f"mosquitto_passwd failed for user `{name}`: {r.stderr.decode(errors='replace').strip()}",
                    fix="check that mosquitto_passwd is installed (package mosquitto)",
                )
        lines += [f"password_file {pw}", "allow_anonymous false"]
    else:
        lines.append("allow_anonymous true")
    if not opts.retain:
        lines.append("retain_available false")  # a retained alarm would reach every later subscriber
    if opts.max_packet_bytes:
        lines.append(f"max_packet_size {opts.max_packet_bytes}")
    if opts.access is not None and opts.dynsec:
        dyn = workdir / "dynamic-security.json"
        dyn.write_text(json.dumps(dynsec_config(opts.access), indent=1))
        dyn.chmod(0o600)
        lines += [f"plugin {opts.dynsec}", f"plugin_opt_config_file {dyn}"]
    elif opts.access is not None:
        acl = mosquitto_acl(opts.access)
    if acl is not None:
        acl_path = workdir / "acl"
        acl_path.write_text(acl if isinstance(acl, str) else "\n".join(acl) + "\n")
        lines.append(f"acl_file {acl_path}")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


@dataclass(frozen=True, slots=True)
class _Options:
    access: Sequence[AccessRule] | None = None
    dynsec: str | None = None
    retain: bool = True
    max_packet_bytes: int | None = None
    tls_version: str | None = None
    ciphers: str | None = None
    bind_client_ids: bool = False


def start_broker(
    workdir: Path,
    *,
    tls: TlsFiles | None = None,
    acl: str | Iterable[str] | None = None,
    users: Mapping[str, str] | None = None,
    kind: BrokerKind = "auto",
    ready_timeout_s: float = 10.0,
    access: Sequence[AccessRule] | None = None,
    retain: bool = True,
    max_packet_bytes: int | None = None,
    tls_version: Literal["1.1", "1.2", "1.3"] | None = None,
    ciphers: str | None = None,
    bind_client_ids: bool = False,
) -> RunningBroker:
    """Start a broker on a free 127.0.0.1 port and return once it accepts connections.

    kind="auto" uses the system mosquitto when installed, else amqtt in its own process.
    acl: mosquitto ACL file text (or its lines). users: {name: password} (mosquitto_passwd).
    access: per-identity rules, the identity being the client certificate's CN (needs `tls` with
    client certificates); mosquitto enforces them with its dynamic-security plugin when installed
    (forbidden subscriptions get SUBACK 0x87), else with an acl_file (forbidden subscriptions are granted
    and receive nothing); amqtt with harness.lab._amqtt_acl. Forbidden publishes are dropped (MQTT 5:
    PUBACK 0x87). retain=False: the broker keeps no retained messages (mosquitto refuses them with
    0x9A and disconnects; amqtt forgets them). max_packet_bytes: mosquitto refuses bigger packets.
    amqtt supports no users or acl text.
    tls_version: the oldest TLS version accepted (mosquitto `tls_version`; 1.1 lowers OpenSSL's security
    level to 0 unless `ciphers` says otherwise). ciphers: mosquitto's `ciphers` (TLS <= 1.2).
    bind_client_ids: with client certificates, the client id is the certificate's CN
    (`use_username_as_clientid`): another identity cannot take a session over (mosquitto only; amqtt
    ignores it and RunningBroker.client_ids_bound says so).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if kind not in ("auto", "mosquitto", "amqtt"):
        raise InputError(
            f"unknown broker kind `{kind}`",
            place="broker.kind",
            fix="write auto, mosquitto or amqtt",
        )
    mosquitto = find_mosquitto()
    chosen: Literal["mosquitto", "amqtt"]
    chosen = ("mosquitto" if mosquitto else "amqtt") if kind == "auto" else kind
    if chosen == "mosquitto" and not mosquitto:
        raise TargetError(
            "mosquitto is not installed",
            fix="install it (apt install mosquitto) or use broker kind amqtt or auto",
        )
    if chosen == "amqtt" and (users or acl is not None):
        raise InputError(
            "the amqtt broker here supports no users or ACL",
            place="broker.kind",
            fix="use kind mosquitto (or auto with mosquitto installed) for users and ACLs",
        )
    if access is not None and (tls is None or not tls.require_certificate):
        raise InputError(
            "access rules need client certificates (the identity is the certificate's CN)",
            place="broker",
            fix="start the broker with TLS and require_certificate, or without access rules",
        )
    if access is not None and acl is not None:
        raise InputError("give either acl text or access rules, not both", place="broker")
    if chosen == "amqtt" and (tls_version is not None or ciphers is not None):
        raise InputError(
            "the amqtt broker here takes no TLS version or cipher settings",
            place="broker.kind",
            fix="use kind mosquitto for tls_min_version and ciphers",
        )
    if any(c in (ciphers or "") for c in " \n\r\t\x00#"):
        raise InputError("the cipher list holds a space, line break or #", place="broker.ciphers")
    opts = _Options(
        access=list(access) if access is not None else None,
        dynsec=find_dynsec() if access is not None and chosen == "mosquitto" else None,
        retain=retain,
        max_packet_bytes=max_packet_bytes,
        tls_version=tls_version,
        ciphers=ciphers,
        bind_client_ids=bind_client_ids and tls is not None and tls.require_certificate,
    )
    last_error: TargetError | None = None
    for _attempt in range(3):  # a free port can be taken between probing and binding: retry
        try:
            return _start_once(workdir, chosen, mosquitto, tls, acl, users, ready_timeout_s, opts)
        except _PortRace as e:
            last_error = e.error
    assert last_error is not None
    raise last_error


class _PortRace(Exception):
    def __init__(self, error: TargetError) -> None:
        self.error = error


def _start_once(
    workdir: Path,
    chosen: Literal["mosquitto", "amqtt"],
    mosquitto: str | None,
    tls: TlsFiles | None,
    acl: str | Iterable[str] | None,
    users: Mapping[str, str] | None,
    ready_timeout_s: float,
    opts: _Options,
) -> RunningBroker:
    port = free_port()
    log_path = workdir / f"{chosen}-{port}.log"
    access_control = "none"
    if chosen == "mosquitto":
        assert mosquitto is not None
        conf = _mosquitto_conf(workdir, port, tls, acl, users, opts)
        if opts.access is not None:
            access_control = "dynsec" if opts.dynsec else "acl_file"
        cmd = [mosquitto, "-c", str(conf)]
        stdin = subprocess.DEVNULL
    else:
        spec: dict[str, Any] = {"port": port}
        if tls:
            spec.update(
                {
                    "cafile": str(tls.cafile),
                    "certfile": str(tls.certfile),
                    "keyfile": str(tls.keyfile),
                    "require_certificate": tls.require_certificate,
                }
            )
        spec["retain"] = opts.retain
        if opts.access is not None:
            spec["acl"] = amqtt_acl_spec(opts.access)
            access_control = "amqtt-acl"
        cmd = [sys.executable, "-m", "harness.lab._amqtt_runner", json.dumps(spec)]
        stdin = subprocess.PIPE  # the runner exits when this pipe closes (our death)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=stdin,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            preexec_fn=_preexec_factory(),
            start_new_session=True,
        )
    with _LIVE_LOCK:
        _LIVE.add(proc)
    bound = chosen == "mosquitto" and opts.bind_client_ids
    broker = RunningBroker(chosen, port, tls is not None, proc, log_path, 0.0, access_control, bound)
    marker = b" running" if chosen == "mosquitto" else b"amqtt broker listening"
    if not _wait_ready(proc, port, time.monotonic() + ready_timeout_s, log_path, marker):
        broker.stop()
        tail = broker.log_tail()
        err = TargetError(
            f"{chosen} broker did not come up on 127.0.0.1:{port} within {ready_timeout_s:g}s"
            + (f"; its log ends:\n{tail}" if tail else ""),
            fix="read the broker log above; check the TLS files and that the broker is installed",
        )
        if "Address already in use" in tail or "address already in use" in tail.lower():
            raise _PortRace(err)
        raise err
    broker.started_in_s = time.monotonic() - t0
    return broker
