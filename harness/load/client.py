"""The MQTT connection of one simulated device in a fleet: vtlab's MqttClient with two fleet habits.

- Reconnect with a jittered, growing backoff (first retry after 0.5-1.5 s, doubling up to 30 s), so that
  after a broker restart thousands of devices do not come back in lockstep: the generator must not cause
  the reconnect storm it then measures.
- A publish while the connection is down is queued by paho (QoS 1) and sent after the reconnect; it is
  reported as queued, not raised, because the alarm was issued at its intended time and its latency
  (or loss) is the platform's to answer for.

Under gevent (locust monkey-patches sockets, threads and events) paho's network thread is a greenlet,
so thousands of these fit in one process.
"""

from __future__ import annotations

import random

import paho.mqtt.client as paho

from harness.errors import TargetError
from harness.transports.mqtt import MqttClient, MqttSettings, StateListener


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
    ) -> None:
        super().__init__(settings, name, client_id=client_id, on_state=on_state, max_inflight=100)
        r = rng or random.Random()
        self._client.reconnect_delay_set(min_delay=0.5 + r.random(), max_delay=max_delay_s)  # type: ignore[arg-type]

    def publish_queued(self, topic: str, payload: bytes) -> bool:
        """Publish at QoS 1; False when the connection is down and paho queued the message for later."""
        info = self._client.publish(topic, payload, qos=1)
        if info.rc == paho.MQTT_ERR_SUCCESS:
            return True
        if info.rc == paho.MQTT_ERR_NO_CONN:
            return False
        raise TargetError(f"{self.name}: publish to {topic} failed at {self.where}: {paho.error_string(info.rc)}")


__all__ = ["FleetClient"]
