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


def _device_settings(lab: Lab, device_id: str) -> DeviceSettings:
    """A lab-file device as the reference lab knows it: its user, heartbeat and protocol identity."""
    from harness.lab.config import ScaipIdentity
    from harness.scenario.registry import device_models

    dev = lab.spec.devices[device_id]
    scaip = None
    if dev.scaip is not None and dev.scaip.cid:
        scaip = ScaipIdentity(cid=dev.scaip.cid, did=dev.scaip.did, dty=device_models()[dev.model].scaip_dty)
    dc09 = dev.dc09
    return DeviceSettings(
        user=dev.user,
        heartbeat_interval_s=parse_duration(dev.heartbeat) / 1e9,
        dc09_account=dc09.account if dc09 is not None else None,
        dc09_key_file=lab.resolve(dc09.key_file) if dc09 is not None and dc09.key_file else None,
        scaip=scaip,
    )


def _deliveries(lab: Lab, listeners: Mapping[str, Any]) -> dict[str, Any]:
    """Centres that vtlab receives for over DC-09 or SCAIP: where the lab must deliver, and how the centre
    knows each device (the probe's account map turned round)."""
    from harness.lab.config import CentreDelivery

    out: dict[str, Any] = {}
    for probe in lab.spec.probes.values():
        centre = probe.centre
        where = (listeners.get("centres") or {}).get(centre)
        if probe.kind != "response_centre" or centre is None or where is None:
            continue
        if probe.via == "dc09":
            accounts = {device: account for account, device in (probe.dc09.accounts if probe.dc09 else {}).items()}
            out[centre] = CentreDelivery(via="dc09", address=where["address"], protocol="tcp", accounts=accounts)
        elif probe.via == "scaip":
            known = probe.scaip.devices if probe.scaip else {}
            accounts = {device: cid_did.split("/", 1)[0] for cid_did, device in known.items()}
            transport = probe.scaip.transport if probe.scaip else "udp"
            out[centre] = CentreDelivery(via="scaip", address=where["address"],
                                         protocol="tcp" if transport == "tcp" else "udp", accounts=accounts)
    return out


def _epj_target(lab: Lab, listeners: Mapping[str, Any]) -> Any:
    """The patient-record probe the lab pushes to, with a client key generated for it by the probe."""
    from harness.lab.config import EpjTarget

    records = listeners.get("records") or {}
    if not records:
        return None
    probe = next(iter(records.values()))
    endpoint = probe.endpoint(generate_client=True)
    settings = endpoint.settings
    return EpjTarget(base_url=endpoint.base_url.rsplit("/", 1)[0], orgnr=endpoint.orgnr, token_url=endpoint.token_url,
                     client_id=endpoint.client.client_id, client_key=endpoint.client.private_key, ca=endpoint.ca,
                     alert_codes=dict(settings.alert_codes), alarm_codes=dict(settings.alarm_codes),
                     supervision_code=settings.supervision_code)


def embedded_target(lab: Lab, faults: str, listeners: Mapping[str, Any] | None = None) -> EmbeddedTarget:
    """`listeners`: where vtlab's listening probes are (harness.run.testbed.TestBed.prepare), for routes to them."""
    spec = lab.spec
    tls_on = spec.mqtt.url.startswith("mqtts://")
    version = "3.1.1" if spec.platform.broker == "amqtt" else spec.mqtt.version  # amqtt speaks 3.1.1 only
    centres = list(dict.fromkeys([*spec.centres, *(p.centre for p in spec.probes.values() if p.centre)]))
    config = LabConfig(
        broker=BrokerSettings(kind=spec.platform.broker, mqtt_version=version),
        site=spec.site,
        topics=Topics(**spec.topics),
        devices={d: _device_settings(lab, d) for d in spec.devices},
        delivery=_deliveries(lab, listeners or {}),
        epj=_epj_target(lab, listeners or {}),
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
