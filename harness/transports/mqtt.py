"""MQTT over paho-mqtt 2 (MQTT 3.1.1 or 5, optional TLS with client certificates).

`MqttClient` is the one paho wrapper in vtlab: devices, probes, the reference lab's router and its
control client all use it, so they cannot drift apart. It subscribes in `on_connect` (so a reconnect
after a broker restart subscribes again), checks every SUBACK reason code, sets TCP_NODELAY on every
socket, and reports connection losses to a listener: a harness client that lost its connection is a
harness fault, never an alarm the supplier lost.

paho's network thread stamps each arrival before anything else runs, so the harness's latency figures
do not include event-loop scheduling.
"""

from __future__ import annotations

import itertools
import os
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.clock import now_ns
from harness.errors import TargetError, UnreachableError
from harness.transports.base import Handler, Message, topic_matches
from harness.transports.tcp import no_delay

_counter = itertools.count(1)

StateListener = Callable[[str, str], None]
"""Called with (state, detail): `lost` (connection dropped), `restored` (connected and subscribed
again), `refused` (the broker refused a subscription or publish)."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    url: str
    version: str = "5"
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    key_password: str | None = None
    verify: bool = True
    username: str | None = None
    password: str | None = None
    connect_timeout_s: float = 5.0

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"


def _refused(rc: object) -> bool:
    """A SUBACK/CONNACK reason that is a failure (MQTT 5 reason code >= 0x80, or 3.1.1's 0x80)."""
    if getattr(rc, "is_failure", None) is not None:
        return bool(rc.is_failure)  # type: ignore[attr-defined]
    return isinstance(rc, int) and rc >= 0x80


class MqttClient:
    """One MQTT connection at QoS 1. `subscribe` returns once the broker granted it, and the client
    subscribes again by itself after every reconnect."""

    def __init__(
        self,
        settings: MqttSettings,
        name: str = "mqtt",
        *,
        client_id: str | None = None,
        on_state: StateListener | None = None,
        max_inflight: int = 1000,
    ) -> None:
        self.settings = settings
        self.name = name
        parts = urlsplit(settings.url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise TargetError(f"`{settings.url}` is not a broker URL",
                              fix="write mqtt://host:port or mqtts://host:port")
        self._host = parts.hostname
        self._port = parts.port or (8883 if settings.tls else 1883)
        self._v5 = settings.version == "5"
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id or f"vtlab-{name}-{os.getpid()}-{next(_counter)}",
            protocol=paho.MQTTv5 if self._v5 else paho.MQTTv311,
        )
        self._client.max_inflight_messages_set(max_inflight)
        self._client.reconnect_delay_set(min_delay=1, max_delay=2)
        self._on_state = on_state or (lambda _s, _d: None)
        self._subs: list[tuple[str, Handler]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._ever_connected = False
        self._closing = False
        self._connect_error: str | None = None
        self._granted: dict[int, tuple[threading.Event, list[str], tuple[str, ...]]] = {}
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            self._client.tls_set(
                ca_certs=str(settings.ca) if settings.ca else None,
                certfile=str(settings.cert) if settings.cert else None,
                keyfile=str(settings.key) if settings.key else None,
                keyfile_password=settings.key_password,
                cert_reqs=ssl.CERT_REQUIRED if settings.verify else ssl.CERT_NONE,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
            if not settings.verify:
                self._client.tls_insecure_set(True)

    @property
    def where(self) -> str:
        return f"{'mqtts' if self.settings.tls else 'mqtt'}://{self._host}:{self._port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # --- paho callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if _refused(rc):
            self._connect_error = f"the broker refused the connection: {rc}"
            self._connected.set()
            return
        no_delay(client.socket())
        reconnect = self._ever_connected
        self._ever_connected = True
        self._connected.set()
        if reconnect:
            with self._lock:
                filters = tuple(dict.fromkeys(f for f, _ in self._subs))
            if filters:
                self._send_subscribe(filters, announce=True)
            else:
                self._on_state("restored", f"{self.name} reconnected to {self.where}")

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if not self._ever_connected:
            if self._connect_error is None:  # a CONNACK refusal said why already
                self._connect_error = f"the broker closed the connection before accepting it ({rc})"
            self._connected.set()
            return
        self._connected.clear()
        if not self._closing:
            self._on_state("lost", f"{self.name} lost its connection to {self.where} ({rc})")

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        arrived = now_ns()
        message = Message(msg.topic, bytes(msg.payload), arrived)
        with self._lock:
            handlers = [h for f, h in self._subs if topic_matches(f, msg.topic)]
        for handler in handlers:
            handler(message)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, rcs: object, props: object) -> None:
        with self._lock:
            entry = self._granted.setdefault(mid, (threading.Event(), [], ()))
        event, refused, filters = entry
        codes = list(rcs) if isinstance(rcs, list | tuple) else [rcs]
        for f, rc in zip(filters or ("?",) * len(codes), codes, strict=False):
            if _refused(rc):
                refused.append(f"{f} ({rc})")
        event.set()

    def _send_subscribe(self, filters: tuple[str, ...], *, announce: bool) -> threading.Event | None:
        result, mid = self._client.subscribe([(f, 1) for f in filters])
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            if announce:
                self._on_state("lost", f"{self.name} could not subscribe again at {self.where}")
            return None
        event = threading.Event()
        refused: list[str] = []
        with self._lock:
            old = self._granted.get(mid)
            if old is not None:  # the SUBACK came in before we got here
                event, refused = old[0], old[1]
            self._granted[mid] = (event, refused, filters)
        if announce:
            def report() -> None:
                if not event.wait(self.settings.connect_timeout_s):
                    self._on_state("lost", f"{self.name}: no SUBACK from {self.where} after reconnecting")
                elif refused:
                    self._on_state("refused", f"{self.name}: subscription refused after reconnecting: "
                                   + ", ".join(refused))
                else:
                    self._on_state("restored", f"{self.name} reconnected to {self.where} and subscribed again")

            threading.Thread(target=report, name=f"resubscribe-{self.name}", daemon=True).start()
        return event

    # --- interface --------------------------------------------------------------------------------
    def connect(self) -> None:
        fix = "check mqtt.url in the lab file and that the broker is running and reachable"
        try:
            self._client.connect(self._host, self._port, keepalive=30)
        except ssl.SSLError as exc:
            raise TargetError(
                f"TLS handshake with the broker at {self.where} failed: {exc.reason or exc}",
                fix="check mqtt.tls (ca, cert, key) in the lab file against the broker's certificates",
            ) from None
        except OSError as exc:
            raise UnreachableError(f"cannot reach the MQTT broker at {self.where}: {exc.strerror or exc}",
                                   fix=fix) from None
        no_delay(self._client.socket())
        self._client.loop_start()
        if not self._connected.wait(self.settings.connect_timeout_s):
            self._client.loop_stop()
            raise TargetError(
                f"the MQTT broker at {self.where} did not answer within {self.settings.connect_timeout_s:g}s",
                fix=fix,
            )
        if self._connect_error:
            self._closing = True
            self._client.loop_stop()
            raise TargetError(
                f"{self._connect_error} (broker {self.where})",
                fix="check mqtt.username, mqtt.password_env and the client certificate in the lab file",
            )

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise TargetError(f"{self.name}: publish to {topic} failed at {self.where}: {paho.error_string(info.rc)}")

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        self.subscribe_many([topic_filter], handler)

    def subscribe_many(self, filters: list[str], handler: Handler) -> None:
        """Subscribe to `filters` with one handler; TargetError when the broker refuses any of them."""
        with self._lock:
            self._subs.extend((f, handler) for f in filters)
        event = self._send_subscribe(tuple(filters), announce=False)
        if event is None:
            raise TargetError(f"subscribe to {', '.join(filters)} failed at {self.where}: not connected")
        if not event.wait(self.settings.connect_timeout_s):
            raise TargetError(f"the broker at {self.where} did not grant the subscription {', '.join(filters)}")
        with self._lock:
            refused = next((r for e, r, _ in self._granted.values() if e is event), [])
        if refused:
            raise TargetError(
                f"the broker at {self.where} refused the subscription: {', '.join(refused)}",
                fix="allow this client to subscribe to these topics in the broker's ACL",
            )

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()


class MqttTransport(MqttClient):
    """The `mqtt` transport of the registry: an MqttClient is already a PubSubTransport."""
