"""`vtlab lab` runs the reference lab alone; an outside MQTT client reaches it with what it prints, using
the certificate of the identity it plays (a device, a response centre), and nothing is left behind."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from pathlib import Path

from harness.transports.base import Message
from harness.transports.mqtt import MqttSettings, MqttTransport
from tests.helpers import VTLAB


def test_the_printed_broker_and_certificates_reach_a_routing_lab() -> None:
    proc = subprocess.Popen([str(VTLAB), "lab", "--for", "20s"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("stop"):
            break
    text = "".join(lines)
    url = re.search(r"broker (mqtts://127\.0\.0\.1:\d+)", text)
    tls = re.search(r"TLS: ca (\S+); one client certificate per identity in (\S+) ", text)
    ledger = re.search(r"ledger (\S+)", text)
    assert url and tls and ledger, text
    assert "device-sa-ragnhild" in text and "centre-rs-vest" in text  # the identities are listed
    pki = Path(tls.group(2))  # one certificate per identity: client-<identity>.pem/.key

    def as_identity(identity: str) -> MqttSettings:
        cert, key = pki / f"client-{identity}.pem", pki / f"client-{identity}.key"
        return MqttSettings(url=url.group(1), ca=Path(tls.group(1)), cert=cert, key=key)

    got: list[Message] = []
    arrived = threading.Event()
    centre = MqttTransport(as_identity("centre-rs-vest"), "outside-centre")
    device = MqttTransport(as_identity("device-sa-ragnhild"), "outside-device")
    centre.connect()
    device.connect()
    try:
        centre.subscribe("vtlab/eksempel/centre/rs-vest/alarm", lambda m: (got.append(m), arrived.set()))
        event = {"v": 1, "cid": "manual-1", "device": "sa-ragnhild", "user": "persona/ragnhild-87",
                 "event": "personal_emergency", "code": "101", "qualifier": "1", "priority": 1, "seq": 1}
        device.publish("vtlab/eksempel/device/sa-ragnhild/event", json.dumps(event).encode())
        assert arrived.wait(5), "the lab did not route the alarm"
    finally:
        centre.close()
        device.close()
        proc.terminate()
        proc.wait(timeout=20)
    routed = json.loads(got[0].payload)
    assert routed["cid"] == "manual-1" and routed["centre"] == "rs-vest"
    assert not pki.exists(), "the throw-away certificates outlived the lab"
    assert not Path(ledger.group(1)).parent.exists(), "`vtlab lab` left its work folder behind"
