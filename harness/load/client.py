"""MQTT connections in the locust processes: vtlab's MqttClient, driven by a greenlet instead of paho's
network thread.

paho's threaded loop (`loop_start`) wakes its thread through a socket pair on every publish and waits in
`select()`; under gevent that costs several extra system calls and greenlet switches per message and
three file descriptors per connection. Here each connection is one socket and one greenlet that waits on
a libev watcher for it (`paho`'s documented external-loop API: loop_read / loop_write / loop_misc), and a
publish from a device's greenlet is written at once (paho writes directly when no loop thread runs). The
MqttClient callbacks (subscribe on connect, SUBACK checks, state reports, arrival stamps) are unchanged.

Fleet habits on top (`FleetClient`):
- Reconnect with a jittered, doubling backoff (first retry after 0.5-1.5 s, at most 30 s), so that after a
  broker restart thousands of devices do not come back in lockstep: the generator must not cause the
  reconnect storm it then measures.
- A publish while the connection is down is queued by paho (QoS 1) and sent after the reconnect; it is
  reported as queued, not raised, because the alarm was issued at its intended time and its latency (or
  loss) is the platform's to answer for.

Only for gevent-patched processes (locust's).
"""

from __future__ import annotations

import random
import ssl
from typing import Any

import gevent
import paho.mqtt.client as paho
from gevent.socket import wait

from harness.errors import TargetError, UnreachableError
from harness.transports.mqtt import MqttClient, MqttSettings, StateListener
from harness.transports.tcp import no_delay

_READ, _WRITE = 1, 2


class GreenMqttClient(MqttClient):
    """MqttClient whose network loop is a greenlet waiting on the socket (see the module docstring)."""

    def __init__(
        self,
        settings: MqttSettings,
        name: str,
        *,
        client_id: str | None = None,
        on_state: StateListener | None = None,
        max_inflight: int = 1000,
        reconnect_s: tuple[float, float] = (0.05, 2.0),
    ) -> None:
        super().__init__(settings, name, client_id=client_id, on_state=on_state, max_inflight=max_inflight)
        self._delays = reconnect_s
        self._runner: Any = None

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
            raise UnreachableError(
                f"cannot reach the MQTT broker at {self.where}: {exc.strerror or exc}", fix=fix
            ) from None
        no_delay(self._client.socket())
        self._runner = gevent.spawn(self._run)
        if not self._connected.wait(self.settings.connect_timeout_s):
            self._stop_runner()
            raise TargetError(
                f"the MQTT broker at {self.where} did not answer within {self.settings.connect_timeout_s:g}s",
                fix=fix,
            )
        if self._connect_error:
            self._closing = True
            self._stop_runner()
            raise TargetError(
                f"{self._connect_error} (broker {self.where})",
                fix="check mqtt.username, mqtt.password_env and the client certificate in the lab file",
            )

    def _run(self) -> None:
        c = self._client
        hub = gevent.get_hub()
        fd = -1
        reader = writer = None
        delay = self._delays[0]
        while not self._closing:
            sock = c.socket()
            if sock is None:  # lost: reconnect after a backoff (paho's callbacks report the loss)
                gevent.sleep(delay)
                delay = min(delay * 2, self._delays[1])
                if self._closing:
                    break
                try:
                    c.reconnect()
                    no_delay(c.socket())
                except (OSError, ssl.SSLError):
                    continue
                continue
            if sock.fileno() != fd:
                fd = sock.fileno()
                reader, writer = hub.loop.io(fd, _READ), hub.loop.io(fd, _WRITE)
            try:
                wait(writer if c.want_write() else reader, timeout=1.0)
            except TimeoutError:
                pass
            except Exception:  # the socket was closed under the watcher (disconnect, broker gone)
                pass
            rc = c.loop_read()
            while rc == paho.MQTT_ERR_SUCCESS and isinstance(sock, ssl.SSLSocket) and sock.pending():
                rc = c.loop_read()  # TLS may hold decrypted bytes the socket no longer signals
            if rc == paho.MQTT_ERR_SUCCESS and c.want_write():
                rc = c.loop_write()
            if rc == paho.MQTT_ERR_SUCCESS:
                rc = c.loop_misc()
            if self.connected:
                delay = self._delays[0]

    def _stop_runner(self) -> None:
        if self._runner is not None:
            self._runner.kill(block=False)
            self._runner = None

    def close(self) -> None:
        self._closing = True
        try:
            self._client.disconnect()
        finally:
            self._stop_runner()


class FleetClient(GreenMqttClient):
    def __init__(
        self,
        settings: MqttSettings,
        name: str,
        *,
        client_id: str | None = None,
        on_state: StateListener | None = None,
        rng: random.Random | None = None,
        max_delay_s: float = 30.0,
    ) -> None:
        r = rng or random.Random()
        super().__init__(
            settings,
            name,
            client_id=client_id,
            on_state=on_state,
            max_inflight=100,
            reconnect_s=(0.5 + r.random(), max_delay_s),
        )

    def publish_queued(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; False when the connection is down and paho queued the message for later."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            return True
        if info.rc == paho.MQTT_ERR_NO_CONN:
            return False
        raise TargetError(f"{self.name}: publish to {topic} failed at {self.where}: {paho.error_string(info.rc)}")


__all__ = ["FleetClient", "GreenMqttClient"]
