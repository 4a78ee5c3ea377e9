"""MQTT transport over paho-mqtt 2 (MQTT 3.1.1 or 5, optional TLS with client certificates).

paho's network thread stamps each arrival before anything else runs, so the harness's latency figures
do not include event-loop scheduling.
"""

from __future__ import annotations

import itertools
import os
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from harness.errors import TargetError
from harness.transports.base import Handler, Message, now_ns, topic_matches
from harness.transports.tcp import no_delay

_counter = itertools.count(1)


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


class MqttTransport:
    """One MQTT connection. QoS 1 everywhere; subscribe returns once the broker granted it."""

    def __init__(self, settings: MqttSettings, name: str = "mqtt") -> None:
        self.settings = settings
        self.name = name
        parts = urlsplit(settings.url)
        self._host = parts.hostname or "127.0.0.1"
        self._tls = parts.scheme == "mqtts"
        self._port = parts.port or (8883 if self._tls else 1883)
        protocol = paho.MQTTv5 if settings.version == "5" else paho.MQTTv311
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"vtlab-{name}-{os.getpid()}-{next(_counter)}",
            protocol=protocol,
        )
        self._client.max_inflight_messages_set(1000)
        self._subs: list[tuple[str, Handler]] = []
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._granted: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_disconnect = self._on_disconnect
        if settings.username:
            self._client.username_pw_set(settings.username, settings.password)
        if self._tls:
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
        return f"{'mqtts' if self._tls else 'mqtt'}://{self._host}:{self._port}"

    # --- paho callbacks (network thread) ---------------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if getattr(rc, "is_failure", False):
            self._connect_error = f"the broker refused the connection: {rc}"
        self._connected.set()

    def _on_disconnect(self, client: paho.Client, userdata: object, flags: object, rc: object, props: object) -> None:
        if not self._connected.is_set():
            self._connect_error = f"the broker closed the connection before accepting it ({rc})"
            self._connected.set()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        arrived = now_ns()
        message = Message(msg.topic, bytes(msg.payload), arrived)
        with self._lock:
            handlers = [h for f, h in self._subs if topic_matches(f, msg.topic)]
        for handler in handlers:
            handler(message)

    def _on_subscribe(self, client: paho.Client, userdata: object, mid: int, rcs: object, props: object) -> None:
        with self._lock:
            event = self._granted.setdefault(mid, threading.Event())
        event.set()

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
            raise TargetError(f"cannot reach the MQTT broker at {self.where}: {exc.strerror or exc}", fix=fix) from None
        no_delay(self._client.socket())
        self._client.loop_start()
        if not self._connected.wait(self.settings.connect_timeout_s):
            self._client.loop_stop()
            raise TargetError(
                f"the MQTT broker at {self.where} did not answer within {self.settings.connect_timeout_s:g}s",
                fix=fix,
            )
        if self._connect_error:
            self._client.loop_stop()
            raise TargetError(
                f"{self._connect_error} (broker {self.where})",
                fix="check mqtt.username, mqtt.password_env and the client certificate in the lab file",
            )

    def publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise TargetError(f"publish to {topic} failed at {self.where}: {paho.error_string(info.rc)}")

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        with self._lock:
            self._subs.append((topic_filter, handler))
        result, mid = self._client.subscribe(topic_filter, qos=1)
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise TargetError(f"subscribe to {topic_filter} failed at {self.where}: {paho.error_string(result)}")
        with self._lock:  # the SUBACK may already have come in on the network thread
            granted = self._granted.setdefault(mid, threading.Event())
        if not granted.wait(self.settings.connect_timeout_s):
            raise TargetError(f"the broker at {self.where} did not grant the subscription {topic_filter}")

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
