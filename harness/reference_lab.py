"""The embedded target: a lab file's `platform: {kind: embedded}` turned into the reference lab's
config (and, for TLS, a throw-away PKI kept outside any run folder)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.lab.certs import TestPki, make_pki
from harness.lab.config import (
    BrokerSettings,
    DeviceSettings,
    LabConfig,
    SupervisionSettings,
    TlsSettings,
    Topics,
)
from harness.labfile import Lab
from harness.units import parse_duration


@dataclass(slots=True)
class EmbeddedTarget:
    config: LabConfig
    pki: TestPki | None  # the harness connects with pki.clients["harness"]

    def cleanup(self) -> None:
        if self.pki is not None:
            shutil.rmtree(self.pki.ca_cert.parent, ignore_errors=True)


def embedded_target(lab: Lab, faults: str) -> EmbeddedTarget:
    spec = lab.spec
    t = spec.topics
    pki = None
    tls = None
    if spec.platform.tls:
        pki = make_pki(Path(tempfile.mkdtemp(prefix="vtlab-pki-")), clients=("harness", "lab"))
        lab_client = pki.clients["lab"]
        tls = TlsSettings(ca=pki.ca_cert, server_cert=pki.server_cert, server_key=pki.server_key,
                          require_client_cert=True, client_cert=lab_client.cert, client_key=lab_client.key)
    version = "3.1.1" if spec.platform.broker == "amqtt" else spec.mqtt.version  # amqtt speaks 3.1.1 only
    config = LabConfig(
        broker=BrokerSettings(kind=spec.platform.broker, mqtt_version=version, tls=tls),
        site=spec.site,
        topics=Topics(event=t["device_event"], heartbeat=t["device_heartbeat"], centre_alarm=t["centre_alarm"],
                      centre_ack=t["centre_ack"], device_ack=t["device_ack"], control=t["lab_control"]),
        devices={d: DeviceSettings(user=dev.user, heartbeat_interval_s=parse_duration(dev.heartbeat) / 1e9)
                 for d, dev in spec.devices.items()},
        routing={p.id: p.centre for p in lab.personas.values()},
        default_centre=None,
        supervision=SupervisionSettings(misses=spec.platform.supervision_misses),
        faults=faults,
    )
    return EmbeddedTarget(config, pki)
