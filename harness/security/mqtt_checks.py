"""Authorisation on the platform's MQTT interface, asserted on the broker's own answers (MQTT 5 reason
codes in CONNACK, SUBACK, PUBACK, DISCONNECT), with an observer as the oracle where the broker's answer
alone cannot show a refusal (MQTT 3.1.1, or a broker that grants a subscription and then serves nothing).

A raw paho client on purpose: vtlab's MqttClient hides reason codes, these checks are about them.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.errors import UnreachableError
from harness.security.result import CannotCheck, CheckResult, accepted, refused
from harness.transports.mqtt import MqttSettings

NOT_AUTHORIZED = 0x87
SESSION_TAKEN_OVER = 0x8E


def reason_name(code: int | None, packet: str = "PUBACK") -> str:
    """`0x87 Not authorized`: the number and paho's name for it."""
    if code is None:
        return "none"
    try:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.reasoncodes import ReasonCode

        kind = {
            "PUBACK": PacketTypes.PUBACK,
            "SUBACK": PacketTypes.SUBACK,
            "CONNACK": PacketTypes.CONNACK,
            "DISCONNECT": PacketTypes.DISCONNECT,
        }[packet]
        return f"0x{code:02X} {ReasonCode(kind, identifier=code).getName()}"
    except Exception:  # a code paho does not know: the number says it
        return f"0x{code:02X}"


def _code(rc: Any) -> int:
    return int(getattr(rc, "value", rc))


@dataclass(slots=True)
class ProbeClient:
    """One MQTT connection that records every reason code the broker sends it."""

    settings: MqttSettings
    name: str
    client_id: str = ""
    connack: int | None = None
    disconnect: int | None = None
    subacks: list[int] = field(default_factory=list)
    pubacks: dict[int, int] = field(default_factory=dict)
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _client: paho.Client | None = None

    @property
    def identity(self) -> str:
        """Who the client is, by name only (the certificate's file name or the user name): no secret."""
        s = self.settings
        return s.cert.stem if s.cert else (s.username or "anonymous")

    @property
    def v5(self) -> bool:
        return self.settings.version == "5"

    def connect(self, timeout_s: float) -> int:
        """Connect; returns the CONNACK reason code (>= 0x80 refused). UnreachableError when nothing listens;
        a connection closed before any CONNACK returns 0x80 (refused without a reason; `connack` stays None)."""
        s = self.settings
        parts = urlsplit(s.url)
        host, port = parts.hostname or "127.0.0.1", parts.port or (8883 if s.tls else 1883)
        self.client_id = self.client_id or f"vtlab-sec-{self.name}-{os.getpid()}-{secrets.token_hex(3)}"
        c = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if self.v5 else paho.MQTTv311,
        )
        c.reconnect_delay_set(60, 120)  # never reconnect by itself during a check
        if s.username:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            c.tls_set(
                ca_certs=str(s.ca) if s.ca else None,
                certfile=str(s.cert) if s.cert else None,
                keyfile=str(s.key) if s.key else None,
                keyfile_password=s.key_password,
                cert_reqs=ssl.CERT_REQUIRED if s.verify else ssl.CERT_NONE,
            )
            if not s.verify:
                c.tls_insecure_set(True)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self._client = c
        try:
            c.connect(host, port, keepalive=30)
        except ssl.SSLError:  # the TLS handshake failed: refused before any CONNACK
            self.disconnect = 0x80
            return 0x80
        except OSError as exc:
            raise UnreachableError(
                f"cannot reach the MQTT broker at {host}:{port}: {exc.strerror or exc}",
                fix="check mqtt.url in the lab file and that the platform runs",
            ) from None
        c.loop_start()
        with self._cond:
            self._cond.wait_for(lambda: self.connack is not None or self.disconnect is not None, timeout_s)
        return 0x80 if self.connack is None else self.connack

    def _on_connect(self, c: paho.Client, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        with self._cond:
            self.connack = _code(rc)
            self._cond.notify_all()

    def _on_disconnect(self, c: paho.Client, u: Any, flags: Any, rc: Any, props: Any = None) -> None:
        with self._cond:
            self.disconnect = _code(rc) if rc is not None else 0
            self._cond.notify_all()

    def _on_subscribe(self, c: paho.Client, u: Any, mid: int, rcs: Any, props: Any = None) -> None:
        with self._cond:
            self.subacks.extend(_code(rc) for rc in rcs)
            self._cond.notify_all()

    def _on_publish(self, c: paho.Client, u: Any, mid: int, rc: Any, props: Any = None) -> None:
        with self._cond:
            self.pubacks[mid] = _code(rc)
            self._cond.notify_all()

    def _on_message(self, c: paho.Client, u: Any, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def subscribe(self, topic_filter: str, timeout_s: float) -> int | None:
        """The SUBACK reason code (None: no SUBACK before the deadline or the connection closed)."""
        assert self._client is not None
        with self._cond:
            seen = len(self.subacks)
        self._client.subscribe(topic_filter, qos=1)
        with self._cond:
            self._cond.wait_for(lambda: len(self.subacks) > seen or self.disconnect is not None, timeout_s)
            return self.subacks[seen] if len(self.subacks) > seen else None

    def publish(self, topic: str, payload: bytes, timeout_s: float) -> int | None:
        """The PUBACK reason code (MQTT 3.1.1: always 0); None when none came (disconnected or too late)."""
        assert self._client is not None
        info = self._client.publish(topic, payload, qos=1)
        with self._cond:
            self._cond.wait_for(lambda: info.mid in self.pubacks or self.disconnect is not None, timeout_s)
            return self.pubacks.get(info.mid)

    def wait(self, predicate: Callable[[ProbeClient], bool], timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout_s)

    def got(self, needle: bytes) -> bool:
        return any(needle in p for _, p in self.messages)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()


def _connected(client: ProbeClient, timeout_s: float, role: str) -> None:
    rc = client.connect(timeout_s)
    if rc >= 0x80:
        raise CannotCheck(
            f"the {role} ({client.identity}) could not connect to make the check: {reason_name(rc, 'CONNACK')}"
        )


def canary_event(device: str, user: str | None, cid: str) -> bytes:
    """A harmless event the platform routes (periodic test report), with a cid no scenario uses."""
    from harness.protocols.wire_json import DeviceEvent, encode

    return encode(
        DeviceEvent(cid=cid, device=device, event="test_transmission", code="602", user=user, qualifier="1", priority=5)
    )


def publish_as_other_device(
    attacker: MqttSettings,
    topic: str,
    victim: str,
    victim_user: str | None,
    observer: MqttSettings,
    observe_topic: str,
    *,
    within_s: float = 3.0,
) -> CheckResult:
    """Publish an alarm on another device's topic, in its name. Refused: PUBACK >= 0x80 or a disconnect;
    or (no reason code to go by) the alarm never reaches the victim's centre. Accepted: it is routed."""
    cid = f"vtlab-forged-{secrets.token_hex(6)}"
    payload = canary_event(victim, victim_user, cid)
    spy = ProbeClient(observer, "observer")
    bad = ProbeClient(attacker, "attacker")
    request = {"identity": bad.identity, "topic": topic, "as_device": victim, "cid": cid, "qos": 1}
    try:
        _connected(spy, within_s, "observer")
        granted = spy.subscribe(observe_topic, within_s)
        if granted is None or granted >= 0x80:
            raise CannotCheck(f"the observer could not subscribe to {observe_topic}: {reason_name(granted, 'SUBACK')}")
        rc = bad.connect(within_s)
        if rc >= 0x80:
            raise CannotCheck(f"the attacking device ({bad.identity}) could not connect: {reason_name(rc, 'CONNACK')}")
        puback = bad.publish(topic, payload, within_s)
        answer: dict[str, Any] = {
            "puback": reason_name(puback),
            "disconnect": reason_name(bad.disconnect, "DISCONNECT"),
        }
        if puback is not None and puback >= 0x80:
            return refused(f"publish as `{victim}` refused with PUBACK {reason_name(puback)}", request, answer)
        if puback is None and bad.disconnect is not None:
            return refused(
                f"the broker disconnected the impostor ({reason_name(bad.disconnect, 'DISCONNECT')})", request, answer
            )
        routed = spy.wait(lambda c: c.got(cid.encode()), within_s)
        answer["routed"] = routed
        if routed:
            return accepted(
                f"{bad.identity} published as `{victim}` and the platform routed it (PUBACK {reason_name(puback)})",
                request,
                answer,
            )
        return refused(
            f"PUBACK {reason_name(puback)}, but the platform did not route the forged alarm within {within_s:g}s",
            request,
            answer,
        )
    finally:
        bad.close()
        spy.close()


def read_other_centre(
    spy_settings: MqttSettings,
    topic: str,
    canary_sender: MqttSettings,
    canary_topic: str,
    canary_device: str,
    canary_user: str | None,
    rightful: MqttSettings,
    *,
    within_s: float = 3.0,
) -> CheckResult:
    """Subscribe to another centre's alarms. Refused: SUBACK >= 0x80; or, when the broker grants it, a canary
    alarm for that centre reaches the rightful centre and not the spy. Accepted: the spy gets it."""
    spy = ProbeClient(spy_settings, "spy")
    request: dict[str, Any] = {"identity": spy.identity, "subscribe": topic, "qos": 1}
    owner = ProbeClient(rightful, "rightful-centre")
    sender = ProbeClient(canary_sender, "canary-device")
    try:
        rc = spy.connect(within_s)
        if rc >= 0x80:
            raise CannotCheck(f"the spying device ({spy.identity}) could not connect: {reason_name(rc, 'CONNACK')}")
        suback = spy.subscribe(topic, within_s)
        answer: dict[str, Any] = {"suback": reason_name(suback, "SUBACK")}
        if suback is not None and suback >= 0x80:
            return refused(
                f"subscription to another centre's alarms refused with SUBACK {reason_name(suback, 'SUBACK')}",
                request,
                answer,
            )
        if suback is None:
            answer["disconnect"] = reason_name(spy.disconnect, "DISCONNECT")
            return refused("no SUBACK: the broker closed the connection instead", request, answer)
        cid = f"vtlab-canary-{secrets.token_hex(6)}"
        request["canary"] = {"device": canary_device, "cid": cid}
        _connected(owner, within_s, "rightful centre")
        if (owner.subscribe(topic, within_s) or 0x80) >= 0x80:
            raise CannotCheck(f"the rightful centre could not subscribe to {topic}")
        _connected(sender, within_s, "canary device")
        sender.publish(canary_topic, canary_event(canary_device, canary_user, cid), within_s)
        if not owner.wait(lambda c: c.got(cid.encode()), within_s):
            raise CannotCheck(f"the canary alarm {cid} never reached its rightful centre: nothing to compare with")
        leaked = spy.wait(lambda c: c.got(cid.encode()), min(within_s, 1.0))
        answer["canary_reached_spy"] = leaked
        if leaked:
            return accepted(
                f"{spy.identity} read another centre's alarm {cid} (SUBACK {answer['suback']})", request, answer
            )
        return refused(
            f"SUBACK {answer['suback']} granted, but the broker served nothing (canary {cid} reached "
            "only its rightful centre)",
            request,
            answer,
        )
    finally:
        for c in (sender, owner, spy):
            c.close()


def publish_to_control(attacker: MqttSettings, topic: str, *, within_s: float = 3.0) -> CheckResult:
    """Publish to the platform's control topic. Only MQTT 5 can show the answer (PUBACK reason code); the
    payload is no valid control message, so nothing changes even where the broker lets it through."""
    bad = ProbeClient(attacker, "attacker")
    if not bad.v5:
        raise CannotCheck(
            'the control-topic check reads the PUBACK reason code, which needs MQTT 5 (lab file mqtt.version: "5")'
        )
    payload = json.dumps({"v": 1, "probe": "vtlab security check: not a control message"}).encode()
    request = {"identity": bad.identity, "topic": topic, "qos": 1}
    try:
        rc = bad.connect(within_s)
        if rc >= 0x80:
            raise CannotCheck(f"the device ({bad.identity}) could not connect: {reason_name(rc, 'CONNACK')}")
        puback = bad.publish(topic, payload, within_s)
        answer = {"puback": reason_name(puback), "disconnect": reason_name(bad.disconnect, "DISCONNECT")}
        if puback is not None and puback < 0x80:
            return accepted(
                f"{bad.identity} may publish to the control topic (PUBACK {reason_name(puback)})", request, answer
            )
        if puback is None:
            return refused("the broker closed the connection instead of a PUBACK", request, answer)
        return refused(f"publish to the control topic refused with PUBACK {reason_name(puback)}", request, answer)
    finally:
        bad.close()


def session_takeover(
    first: MqttSettings, second: MqttSettings, *, same_identity: bool = False, within_s: float = 3.0
) -> CheckResult:
    """Connect `first` with a fresh client id, then `second` (another identity) with the same id. A broker
    that hands the session to the second identity (the first is disconnected, MQTT 5: 0x8E Session taken
    over) lets one device knock another off the platform: a finding. With `same_identity`, the same
    identity reconnecting is the expected takeover; what the broker does is recorded either way."""
    client_id = f"vtlab-takeover-{secrets.token_hex(4)}"
    a = ProbeClient(first, "first", client_id=client_id)
    b = ProbeClient(second, "second", client_id=client_id)
    request = {"client_id": client_id, "first_identity": a.identity, "second_identity": b.identity}
    try:
        _connected(a, within_s, "first client")
        rc = b.connect(within_s)
        answer: dict[str, Any] = {"second_connack": reason_name(rc, "CONNACK")}
        if rc >= 0x80:
            answer["first_disconnect"] = reason_name(a.disconnect, "DISCONNECT")
            return refused(
                f"the second identity was refused the client id ({reason_name(rc, 'CONNACK')})", request, answer
            )
        kicked = a.wait(lambda c: c.disconnect is not None, within_s)
        answer["first_disconnect"] = reason_name(a.disconnect, "DISCONNECT") if kicked else "still connected"
        if kicked and not same_identity:
            return accepted(
                f"{b.identity} took over the session of {a.identity} (client id {client_id}; the first "
                f"was disconnected: {answer['first_disconnect']})",
                request,
                answer,
            )
        if kicked:
            return refused(
                f"the same identity took its own session over; the first connection was closed "
                f"({answer['first_disconnect']})",
                request,
                answer,
            )
        return refused(
            "the broker kept the first session; the second identity did not get its client id", request, answer
        )
    finally:
        b.close()
        a.close()
