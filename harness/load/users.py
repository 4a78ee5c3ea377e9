"""The locust users: each is one device of the fleet, so locust's spawning, its run time and its request
statistics apply to devices as they would to web clients. A device keeps one connection for the whole
run (MQTT with its own client certificate, or a DC-09 / SCAIP line of harness.load.lines), heartbeats at
its interval and sends its alarms at the instants the schedule fixed in advance (harness.load.shapes). It
never waits for the platform: a slow platform must not slow the load down. What it sent goes to its
process's node (harness.load.node), which correlates the arrivals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import heapq
import os
import random
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gevent
from locust import User, task

from harness.clock import utc_text
from harness.errors import TargetError
from harness.load import hooks
from harness.load.client import FleetClient
from harness.load.lines import Dc09Line, LineError, ScaipLine
from harness.load.node import NS, Sent
from harness.load.shapes import heartbeat_times
from harness.protocols.scaip import Mrq
from harness.protocols.wire_json import DeviceEvent, Heartbeat, encode
from harness.transports.base import Message
from harness.transports.sip import new_ref

CONNACK_WAIT_S = 30.0
"""How long a fleet device waits for its CONNACK: a slow CONNACK is the platform's connect_time, not a
reason for the generator to hang up and reconnect (which would feed a reconnect storm)."""


class Device(User):
    """One simulated device of the fleet (see the module docstring)."""

    def on_start(self) -> None:
        node = hooks.NODE
        assert node is not None
        self.node = node
        self.client: Any = None  # FleetClient, Dc09Line or ScaipLine
        slot = node.next_slot()
        if slot is None:
            node.observe("harness_fault", "locust started more users than the fleet has devices")
            self.slot = -1
            return
        self.slot = slot
        self.device = node.job.devices[slot]
        did = self.device["id"]
        rng = random.Random(slot)
        connection = SimpleNamespace(device=did, seq=0, it=slot)  # what connect_time's evidence line names
        started: int | None = None  # the first attempt's start, once a handshake slot is free
        backoff = 0.5
        attempt = 0
        while True:
            attempt += 1
            client = self._connection(attempt, rng)
            try:
                with node.connecting:  # a bounded number of TLS handshakes at once keeps the loop responsive
                    started = started or time.monotonic_ns()  # the generator's own queueing is not counted
                    client.connect()
                break
            except (TargetError, LineError) as exc:
                with contextlib.suppress(Exception):
                    client.close()  # never leave a half-open connection behind for the broker to kick
                if time.monotonic_ns() + backoff * NS >= node.end_sending:
                    node.counts["connect_failed"] += 1
                    node.match_line(
                        f"{node.job.tag}-connect-{did}",
                        connection,
                        1,
                        "connect_time",
                        "not_reached",
                        detail=f"never connected: {exc}",
                    )
                    node.request(
                        "CONNECT",
                        "device",
                        (time.monotonic_ns() - (started or time.monotonic_ns())) / 1e6,
                        exception=exc,
                    )
                    return
                node.counts["connect_retries"] += 1
                gevent.sleep(backoff * (0.5 + rng.random()))
                backoff = min(backoff * 2, 10.0)
        took = time.monotonic_ns() - (started or time.monotonic_ns())
        node.counts["connected"] += 1
        node.match_line(f"{node.job.tag}-connect-{did}", connection, 1, "connect_time", "ok", lat=took)
        node.request("CONNECT", "device", took / 1e6)
        self.client = client
        if node.job.acknowledge and node.job.via == "mqtt":
            try:
                client.subscribe(node.job.topic("device_ack", device=did), self._on_ack)
            except TargetError as exc:
                node.observe("finding", f"device {did} could not subscribe to its acknowledgements: {exc.problem}")

    def _connection(self, attempt: int, rng: random.Random) -> Any:
        """A new connection for this device in the fleet's protocol (not yet connected)."""
        job, did = self.node.job, self.device["id"]
        if job.via == "mqtt":
            settings = dataclasses.replace(job.settings(f"device-{did}"), connect_timeout_s=CONNACK_WAIT_S)
            return FleetClient(
                settings,
                f"device-{did}",
                client_id=f"vtlab-{did}-{os.getpid()}-{attempt}",
                on_state=self._conn_state,
                rng=rng,
            )
        host, _, port = self.device["to"].rpartition(":")
        link = job.link

        def on_reply(key: str, ok: bool, t_ns: int, detail: dict[str, Any]) -> None:
            self.node.on_ingress_reply(did, key, ok, t_ns, detail)

        if job.via == "dc09":
            return Dc09Line(
                f"device-{did}",
                self.device["account"],
                host.strip("[]"),
                int(port),
                protocol=link.get("protocol", "tcp"),
                key=_dc09_key(link),
                receiver=link.get("receiver", "0"),
                line=link.get("line", "0"),
                timeout_s=float(link.get("timeout_s", 5.0)),
                on_reply=on_reply,
                on_state=self._conn_state,
                rng=rng,
            )
        transport = link.get("transport", "udp")
        return ScaipLine(
            f"device-{did}",
            self.device["cid"],
            host.strip("[]"),
            int(port),
            transport=transport,
            ssl_context=_tls_context(link.get("ca")) if transport == "tls" else None,
            on_reply=on_reply,
            on_state=self._conn_state,
            rng=rng,
        )

    def _on_ack(self, message: Message) -> None:
        self.node.on_device_ack(self.device["id"], message)

    def _conn_state(self, state: str, detail: str) -> None:
        self.node.counts[f"device_{state}"] += 1
        if self.node.counts[f"device_{state}"] <= 5:
            self.node.observe("load", f"device connection {state}: {detail}")

    def on_stop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @task
    def live(self) -> None:
        """Heartbeats and alarms at their scheduled instants until the schedule ends; then idle."""
        node = self.node
        if self.client is None:
            gevent.sleep(3600)
            return
        job, sched, slot = node.job, node.schedule, self.slot
        did, user = self.device["id"], self.device["user"]
        alarm_spec = job.events["alarm"]
        storm_spec = job.events.get("storm", alarm_spec)
        hb_interval = job.heartbeat_ns
        hb_topic, ev_topic = job.topic("device_heartbeat", device=did), job.topic("device_event", device=did)
        forever = 1 << 62  # heartbeats go on until locust stops the device: silence is the platform's to report
        streams: list[Iterator[tuple[int, int, int]]] = [
            ((t, 0, k) for k, t in enumerate(sched.device_times(slot))),
            ((t, 2, k) for k, t in enumerate(heartbeat_times(slot, len(job.devices), hb_interval, forever))),
        ]
        storm = sched.storm_slot(slot)
        if storm is not None:
            streams.append(iter([(storm[1], 1, 0)]))
        seq = 0
        hb_seq = 0
        for t_rel, kind, k in heapq.merge(*streams):
            due = node.t0 + t_rel
            wait = due - time.monotonic_ns()
            # a device behind its schedule still yields: gevent is cooperative, and a backlog sent without
            # yielding would starve every connection's network loop and the probe
            gevent.sleep(wait / NS if wait > 0 else 0)
            if kind == 2:
                hb_seq += 1
                if job.via == "dc09":
                    self.client.heartbeat()
                elif job.via == "scaip":
                    self.client.heartbeat(job.link.get("dty", "0003"), self.device.get("did") or None)
                else:
                    body = encode(Heartbeat(device=did, interval_s=hb_interval / NS, seq=hb_seq, sent=utc_text()))
                    self.client.publish_queued(hb_topic, body)
                node.counts["heartbeats"] += 1
                continue
            seq += 1
            spec = storm_spec if kind == 1 else alarm_spec
            cid = f"{job.tag}-{slot}-{'s' if kind == 1 else ''}{k}"
            iteration = (slot + k * len(job.devices)) if kind == 0 else -(slot + 1)
            if job.keyed:
                self._send_keyed(spec, cid, iteration, seq, due, kind == 1)
                continue
            s = Sent(self.device, spec, iteration, seq, due, kind == 1, cid)
            event = DeviceEvent(
                cid=cid,
                device=did,
                user=user,
                event=spec["event"],
                code=spec["code"],
                qualifier=spec["qualifier"],
                priority=spec["priority"],
                seq=seq,
                battery=100,
                sent=utc_text(),
            )
            body = encode(event)
            node.sent[cid] = s  # before publishing: the arrival may come back first
            sent_ns = time.monotonic_ns()
            if not self.client.publish_queued(ev_topic, body):
                node.counts["queued_offline"] += 1
            node.sent_alarm(cid, s, body.decode("utf-8"), sent_ns)  # the wire text, not encoded twice

    def _send_keyed(self, spec: dict[str, Any], cid: str, iteration: int, seq: int, due: int, storm: bool) -> None:
        """One DC-09 or SCAIP alarm: its own zone number among this device's alarms in flight (1..zones), so
        the centre's arrival names it by `<device>:<code>:<zone>` (DC-09 and SCAIP carry no cid)."""
        node, job, did = self.node, self.node.job, self.device["id"]
        zones = int(job.link.get("zones", 999))
        zone = f"{(seq - 1) % zones + 1:03d}"
        key = f"{did}:{spec['code']}:{zone}"
        s = Sent(self.device, spec, iteration, seq, due, storm, cid, key)
        node.sent[cid] = s  # before sending: the arrival may come back first
        node.keyed.setdefault(key, []).append(s)
        node.sent_keys[key] = s
        sent_ns = time.monotonic_ns()
        if job.via == "dc09":
            fields = self.client.send_alarm(spec["code"], spec["qualifier"], zone, key)
        else:
            mrq = Mrq(
                ref=new_ref(),
                cid=self.client.cid,
                dty=job.link.get("dty", "0003"),
                did=self.device.get("did") or None,
                dco=zone,
                stc=spec["stc"],
                pri=min(int(spec["priority"]), 9),
            )
            fields = self.client.send_alarm(mrq, key)
        if not self.client.connected:
            node.counts["queued_offline"] += 1
        payload = {
            "cid": cid,
            "device": did,
            "user": self.device["user"],
            "event": spec["event"],
            "code": spec["code"],
            "qualifier": spec["qualifier"],
            "zone": zone,
            "key": key,
            **fields,
        }
        node.sent_alarm(cid, s, payload, sent_ns)


def _dc09_key(link: dict[str, Any]) -> bytes | None:
    """The fleet's AES key, from the environment variable or file the lab file names (never the job file)."""
    if link.get("key_env"):
        value = os.environ.get(link["key_env"])
        if value is None:
            raise SystemExit(f"environment variable {link['key_env']} (the DC-09 key) is not set")
        return value.encode()
    if link.get("key_file"):
        return Path(link["key_file"]).read_bytes().strip()
    return None


def _tls_context(ca: str | None) -> ssl.SSLContext:
    """SIP over TLS to the platform's SCAIP receiver, its certificate checked against the lab's CA."""
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx
