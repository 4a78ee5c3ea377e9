"""The embedded target: a lab file's `platform: {kind: embedded}` turned into the reference lab's
config and, for TLS, a throw-away PKI with one client certificate per identity.

Identities (certificate CN = broker user): `device-<device id>` for each device, `centre-<centre id>` for
each response centre (probe), `lab` for the lab's router and `harness` for the control client. The broker
lets each identity use only its own topics (LabConfig.access_rules). TLS is on when the lab file's
`mqtt.url` is `mqtts://` (the one switch).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.lab.config import (
    CONTROL_IDENTITY,
    ROUTER_IDENTITY,
    BrokerSettings,
    DeviceSettings,
    LabConfig,
    SupervisionSettings,
    TlsSettings,
    Topics,
    centre_identity,
    device_identity,
)
from harness.labfile import Lab
from harness.pki import TestPki, make_pki
from harness.transports.mqtt import MqttSettings
from harness.units import parse_duration

__all__ = [
    "CONTROL_IDENTITY",
    "ROUTER_IDENTITY",
    "EmbeddedTarget",
    "centre_identity",
    "device_identity",
    "embedded_target",
]


@dataclass(slots=True)
class EmbeddedTarget:
    config: LabConfig
    pki: TestPki | None  # None without TLS; its CA key is never written (nothing more can be issued)

    @property
    def identities(self) -> list[str]:
        return self.config.identities()

    def client_settings(self, identity: str, base: MqttSettings) -> MqttSettings:
        """`base` (the broker URL, version, timeouts) with the certificate and key of `identity` and the
        lab's CA; `base` unchanged when the lab runs without TLS."""
        if self.pki is None:
            return base
        cert = self.pki.clients.get(identity)
        if cert is None:
            raise InputError(
                f"the reference lab has no certificate for identity `{identity}`",
                place="embedded lab",
                fix=f"use one of {', '.join(sorted(self.pki.clients))}",
            )
        return dataclasses.replace(base, ca=self.pki.ca_cert, cert=cert.cert, key=cert.key, key_password=None)

    def cleanup(self) -> None:
        """Delete the certificates (the lab does it too when it exits; this covers a lab that was killed)."""
        if self.pki is not None:
            shutil.rmtree(self.pki.ca_cert.parent, ignore_errors=True)


def embedded_target(lab: Lab, faults: str, listeners: Mapping[str, Any] | None = None) -> EmbeddedTarget:
    """`listeners`: where vtlab's listening probes are (harness.run.testbed.TestBed.prepare), for routes to them."""
    spec = lab.spec
    tls_on = spec.mqtt.url.startswith("mqtts://")
    version = "3.1.1" if spec.platform.broker == "amqtt" else spec.mqtt.version  # amqtt speaks 3.1.1 only
    centres = list(dict.fromkeys([*spec.centres, *(p.centre for p in spec.probes.values())]))
    config = LabConfig(
        broker=BrokerSettings(kind=spec.platform.broker, mqtt_version=version),
        site=spec.site,
        topics=Topics(**spec.topics),
        devices={
            d: DeviceSettings(user=dev.user, heartbeat_interval_s=parse_duration(dev.heartbeat) / 1e9)
            for d, dev in spec.devices.items()
        },
        centres=centres,
        routing={p.id: p.centre for p in lab.personas.values()},
        default_centre=None,
        supervision=SupervisionSettings(misses=spec.platform.supervision_misses),
        faults=faults,
    )
    if not tls_on:
        return EmbeddedTarget(config, None)
    pki_dir = Path(tempfile.mkdtemp(prefix="vtlab-pki-"))
    try:
        pki = make_pki(pki_dir, clients=tuple(config.identities()), keep_ca_key=False)
    except BaseException:
        shutil.rmtree(pki_dir, ignore_errors=True)
        raise
    router, control = pki.clients[ROUTER_IDENTITY], pki.clients[CONTROL_IDENTITY]
    tls = TlsSettings(
        ca=pki.ca_cert,
        server_cert=pki.server_cert,
        server_key=pki.server_key,
        require_client_cert=True,
        client_cert=router.cert,
        client_key=router.key,
        control_cert=control.cert,
        control_key=control.key,
    )
    config = config.model_copy(update={"broker": config.broker.model_copy(update={"tls": tls}), "pki_dir": pki_dir})
    return EmbeddedTarget(config, pki)
