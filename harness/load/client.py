"""The MQTT connection of one simulated device in a fleet: vtlab's MqttClient with two fleet habits.

- Reconnect with a jittered, growing backoff (first retry after 0.5-1.5 s, doubling up to 30 s), so that
  after a broker restart thousands of devices do not come back in lockstep: the generator must not cause
  the reconnect storm it then measures.
- A publish while the connection is down is queued by paho (QoS 1) and sent after the reconnect; it is
  reported as queued, not raised, because the alarm was issued at its intended time and its latency
  (or loss) is the platform's to answer for.

Under gevent (locust monkey-patches sockets, threads and events) paho's network thread is a greenlet,
so thousands of these fit in one process. With `green_loop` (the load path's default, see
`GREEN_LOOP_ENV`) there is no network thread at all: one greenlet per connection waits on the socket
itself (a libev watcher) and drives paho's external-loop API (`loop_read` / `loop_write` /
`loop_misc`); a publish is written at once by the greenlet that publishes. One descriptor per device
instead of three (no wake-up socket pair), and no `select` call per wake-up.
"""

from __future__ import annotations

import contextlib
import os
import random
import ssl
from typing import Any

import paho.mqtt.client as paho

from harness.errors import TargetError
from harness.transports.mqtt import MqttClient, MqttSettings, StateListener
from harness.transports.tcp import no_delay

GREEN_LOOP_ENV = "VTLAB_LOAD_MQTT_LOOP"
"""`thread` switches the fleet back to paho's own network loop (one greenlet per client under gevent,
waiting in `select` through harness.load.greenio); anything else: the greenlet-per-socket loop."""
IDLE_WAKE_S = 5.0
"""How often an idle connection's greenlet runs paho's housekeeping (keepalive PINGREQ every 30 s)."""
READ_BURST = 256
"""At most this many packets read per wake-up while the socket still holds data. paho's `loop_read` reads
one packet when nothing of its own is in flight (a probe that only receives), so without the burst a probe
read one alarm per turn of the event loop while every device greenlet had its turn in between: measured,
a flat-out run with the probe not acknowledging delivered under 1 % of what it sent."""


def green_loop_default() -> bool:
    return os.environ.get(GREEN_LOOP_ENV, "greenlet") != "thread"


class FleetClient(MqttClient):
    def __init__(
        self,
        settings: MqttSettings,
        name: str,
        *,
        client_id: str | None = None,
        on_state: StateListener | None = None,
        rng: random.Random | None = None,
        max_delay_s: int = 30,
        max_inflight: int = 100,
    ) -> None:
        super().__init__(settings, name, client_id=client_id, on_state=on_state, max_inflight=max_inflight)
        r = rng or random.Random()
        self._rng = r
        self._min_delay = 0.5 + r.random()
        self._max_delay = float(max_delay_s)
        self._client.reconnect_delay_set(min_delay=self._min_delay, max_delay=max_delay_s)  # type: ignore[arg-type]
        self._green: Any = None
        self._poll: Any = None  # a poll object on the current socket (readable now?), with its fd
        self._poll_fd = -1
        self._flushing: Any = None  # the greenlet finishing a write the publisher could not complete
        if green_loop_default():
            # MqttClient.connect/close call loop_start/loop_stop: here they start and stop the greenlet
            self._client.loop_start = self._green_start  # type: ignore[method-assign]
            self._client.loop_stop = self._green_stop  # type: ignore[method-assign]

    # --- the greenlet-per-socket loop ---------------------------------------------------------------
    def _green_start(self) -> paho.MQTTErrorCode:
        import gevent

        if self._green is None:
            self._green = gevent.spawn(self._green_main)
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _green_stop(self) -> paho.MQTTErrorCode:
        import gevent

        g, self._green = self._green, None
        if g is not None and g is not gevent.getcurrent():
            g.kill(block=False)
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
        return paho.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _green_main(self) -> None:
        """paho's loop_forever, on a socket watcher: read when readable, housekeeping at least every
        IDLE_WAKE_S, reconnect with the jittered backoff when the connection is gone."""
        from gevent.socket import wait_read, wait_readwrite

        c = self._client
        delay = self._min_delay
        ok = paho.MQTTErrorCode.MQTT_ERR_SUCCESS
        while not self._closing:
            sock = c.socket()
            if sock is None:
                import gevent

                gevent.sleep(delay * (0.75 + 0.5 * self._rng.random()))
                delay = min(delay * 2, self._max_delay)
                if self._closing:
                    return
                try:
                    c.reconnect()
                except (TimeoutError, OSError, ssl.SSLError):
                    continue
                no_delay(c.socket())
                delay = self._min_delay
                continue
            pending = getattr(sock, "pending", None)
            if not (pending and pending()):  # TLS may hold a decrypted record the socket no longer signals
                # bytes paho could not write yet (a full send buffer; or a publish or PUBACK queued inside
                # a callback) wait for the socket to be writable too: waiting for a read alone can stall
                # both ends, the broker holding its next message until our PUBACK is written
                wait = wait_readwrite if c.want_write() else wait_read
                try:
                    wait(sock.fileno(), timeout=IDLE_WAKE_S)
                except TimeoutError:
                    pass
                except (OSError, ValueError):  # closed under us: paho notices on its next call
                    pass
            rc = c.loop_read()
            n = 1
            while rc == ok and n < READ_BURST and self._readable(sock):
                rc = c.loop_read()
                n += 1
            if rc == ok and c.want_write():
                rc = c.loop_write()
            if rc == ok:
                c.loop_misc()

    def _readable(self, sock: Any) -> bool:
        """Does the socket hold more bytes right now (no waiting, no yield)?"""
        pending = getattr(sock, "pending", None)
        if pending and pending():
            return True
        try:
            fd = sock.fileno()
            if fd != self._poll_fd or self._poll is None:
                from gevent.monkey import get_original

                self._poll = get_original("select", "poll")()  # the OS's poll: gevent's would yield
                self._poll.register(fd, 1)  # POLLIN
                self._poll_fd = fd
            return bool(self._poll.poll(0))
        except (OSError, ValueError):
            return False

    def _flush_later(self) -> None:
        """Finish a write the publishing greenlet left half done (a full send buffer). The connection's
        greenlet may be waiting for a read alone, decided before this publish; without this the rest of
        the message waited for the next packet from the broker or the idle wake-up (up to IDLE_WAKE_S),
        and its latency was charged to the platform."""
        if self._green is None or self._flushing is not None:
            return
        import gevent

        self._flushing = gevent.spawn(self._flush)

    def _flush(self) -> None:
        from gevent.socket import wait_write

        c = self._client
        try:
            while not self._closing and c.want_write():
                sock = c.socket()
                if sock is None:
                    return
                try:
                    wait_write(sock.fileno(), timeout=IDLE_WAKE_S)
                except TimeoutError:
                    continue
                except (OSError, ValueError):
                    return
                c.loop_write()  # a lost connection shows on the connection's own greenlet, which reconnects
                if c.socket() is not sock:
                    return
        finally:
            self._flushing = None

    def publish_queued(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; False when the connection is down and paho queued the message for later."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            if self._client.want_write():
                self._flush_later()
            return True
        if info.rc == paho.MQTT_ERR_NO_CONN:
            return False
        raise TargetError(f"{self.name}: publish to {topic} failed at {self.where}: {paho.error_string(info.rc)}")


__all__ = ["FleetClient"]
