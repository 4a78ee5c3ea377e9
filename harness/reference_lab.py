"""The embedded target: a lab file's `platform: {kind: embedded}` turned into the reference lab's
config and, for TLS, a throw-away PKI with one client certificate per identity.

Identities (certificate CN = broker user): `device-<device id>` for each device, `centre-<centre id>` for
each response centre (probe), `lab` for the lab's router and `harness` for the control client. The broker
lets each identity use only its own topics (LabConfig.access_rules). TLS is on when the lab file's
`mqtt.url` is `mqtts://` (the one switch).

Security profile (`platform: {profile: secure|insecure, insecure: [...]}`): `secure` (the default) keeps every
protection in PROTECTIONS on; `insecure` switches off those listed in `insecure:` (all when the list is
empty), so that each security check is shown to pass on the one and fail, for its own reason, on the other.
TLS itself still follows mqtt.url (`mqtt://` is the insecure broker); listing `tls` with an mqtts:// URL is
refused as contradictory.

Gateway role: a lab-file device `via: serial` (simulate mode) or `via: ble` is read by the lab itself, as a
home hub would: the serial device's pty path is handed over; for BLE, an AirBridge (harness.lab.ble_bridge)
puts a controller on vtlab's emulated air and the lab's central opens it over TCP. The bridges live in this
process and are closed by EmbeddedTarget.cleanup().
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
    IngressSettings,
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
    "PROTECTIONS",
    "ROUTER_IDENTITY",
    "EmbeddedTarget",
    "centre_identity",
    "device_identity",
    "embedded_target",
    "switched_off",
]


PROTECTIONS: dict[str, str] = {
    "tls": "the broker speaks TLS (follows mqtt.url: write mqtt:// to switch it off)",
    "tls_version": "the broker refuses TLS older than 1.2 (off: 1.1 accepted)",
    "weak_ciphers": "the broker refuses NULL/anonymous/export suites (off: ALL:eNULL:@SECLEVEL=0)",
    "client_cert": "the broker requires a client certificate (off: anonymous clients; no per-identity ACL)",
    "access_rules": "each identity may use only its own topics (broker ACL)",
    "bind_client_ids": "the client id is the certificate's CN: no session takeover by another identity",
    "dc09_encryption": "a DC-09 account with a key refuses plaintext (DUH)",
    "dc09_window": "a DC-09 timestamp outside -40 s/+20 s is refused (NAK): no replay",
    "scaip_tls": "SCAIP devices that the lab file gives transport tls reach the lab over SIP/TLS only",
    "epj_token": "the lab pushes to the patient record with a HelseID token",
    "fhir_token": "the lab's own FHIR API answers only requests with a valid HelseID token (off: anyone reads)",
    "validate_messages": "an event naming another device than its topic, a foreign centre's ack: refused",
}
"""The protections of the secure profile, by the name `platform.insecure` switches them off with."""


def switched_off(lab: Lab) -> frozenset[str]:
    """The protections the lab file's platform block switches off (empty for the secure profile)."""
    platform = lab.spec.platform
    place = str(lab.src.place("platform")) if hasattr(lab, "src") else "platform"
    unknown = sorted(set(platform.insecure) - set(PROTECTIONS))
    if unknown:
        raise InputError(
            f"platform.insecure names unknown protection(s) {unknown}",
            place=place,
            fix=f"use some of {', '.join(PROTECTIONS)}",
        )
    if platform.profile == "secure":
        if platform.insecure:
            raise InputError(
                "platform.insecure lists protections to switch off, but the profile is secure",
                place=place,
                fix="write profile: insecure, or remove insecure:",
            )
        return frozenset()
    off = frozenset(platform.insecure or PROTECTIONS)
    if "tls" in platform.insecure and lab.spec.mqtt.url.startswith("mqtts://"):
        raise InputError(
            "platform.insecure switches TLS off, but mqtt.url is mqtts://",
            place=place,
            fix="write mqtt.url as mqtt://... (TLS follows the URL's scheme)",
        )
    return off


@dataclass(slots=True)
class EmbeddedTarget:
    config: LabConfig
    pki: TestPki | None  # None without TLS; its CA key is never written (nothing more can be issued)
    bridges: list[Any] = dataclasses.field(default_factory=list)
    """AirBridges (harness.lab.ble_bridge) of the lab's BLE gateway devices, open while the lab runs."""
    insecure: frozenset[str] = frozenset()
    """The protections switched off (PROTECTIONS), for the report."""

    @property
    def clock(self) -> str:
        """The lab's clock for time-of-day rules (a wandering plan's night), for the report."""
        c = self.config
        if c.local_time is None:
            return f"the machine's local time ({c.timezone})"
        return f"set to {c.local_time} ({c.timezone}) when the lab started, running on (platform.local_time)"

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
        """Close the BLE bridges and delete the certificates (the lab does it too when it exits; this covers
        a lab that was killed)."""
        for bridge in self.bridges:
            bridge.close()
        self.bridges.clear()
        if self.pki is not None:
            shutil.rmtree(self.pki.ca_cert.parent, ignore_errors=True)


def _device_settings(lab: Lab, device_id: str) -> DeviceSettings:
    """A lab-file device as the reference lab knows it: its user, heartbeat and protocol identity."""
    from harness.lab.config import ScaipIdentity
    from harness.plugins import device_models

    dev = lab.spec.devices[device_id]
    scaip = None
    if dev.scaip is not None and dev.scaip.cid:
        scaip = ScaipIdentity(cid=dev.scaip.cid, did=dev.scaip.did, dty=device_models()[dev.model].scaip_dty)
    dc09 = dev.dc09
    return DeviceSettings(
        user=dev.user,
        heartbeat_interval_s=parse_duration(dev.heartbeat) / 1e9 / lab.spec.platform.time_scale,
        dc09_account=dc09.account if dc09 is not None else None,
        dc09_key_file=lab.resolve(dc09.key_file) if dc09 is not None and dc09.key_file else None,
        scaip=scaip,
        thresholds=_thresholds(lab, dev.user),
        wandering=_wandering(lab, dev.user),
    )


def _thresholds(lab: Lab, user: str) -> dict[str, Any]:
    """The user's follow-up plan (persona `thresholds:`) as the lab's reading limits."""
    from decimal import Decimal

    from harness.lab.config import ReadingLimits

    persona = lab.personas.get(user)
    out: dict[str, Any] = {}
    for name, t in (persona.thresholds if persona is not None else {}).items():
        lo = t.min.split(" ", 1) if t.min else None
        hi = t.max.split(" ", 1) if t.max else None
        unit = (lo or hi or ["", ""])[1]
        out[name] = ReadingLimits(unit=unit, min=Decimal(lo[0]) if lo else None, max=Decimal(hi[0]) if hi else None)
    return out


def _wandering(lab: Lab, user: str) -> Any:
    """The user's wandering plan (persona `wandering:`) as the lab applies it; None without one."""
    from harness.lab.wandering import WanderingPlan

    persona = lab.personas.get(user)
    plan = persona.wandering if persona is not None else None
    if plan is None:
        return None
    start, end = plan.window
    return WanderingPlan(start=start, end=end, events=tuple(plan.events))


def _deliveries(lab: Lab, listeners: Mapping[str, Any]) -> dict[str, Any]:
    """Centres that vtlab receives for over DC-09 or SCAIP: where the lab must deliver, and how the centre
    knows each device (the probe's account map turned round)."""
    from harness.lab.config import CentreDelivery

    out: dict[str, Any] = {}
    for name, probe in lab.spec.probes.items():
        centre = probe.centre
        where = (listeners.get("centres") or {}).get(centre)
        if probe.kind != "response_centre" or centre is None or where is None:
            continue
        if probe.via == "dc09":
            dc09 = probe.dc09
            accounts = {device: account for account, device in (dc09.accounts if dc09 else {}).items()}
            if dc09 is not None and dc09.key_env:
                raise InputError(
                    f"the embedded lab cannot encrypt for centre `{centre}`: its DC-09 key is in an environment "
                    "variable, which the lab process is not given",
                    place=str(lab.src.place("probes", name, "dc09", "key_env")),
                    fix="for the embedded lab write the key to a file and set dc09.key_file",
                )
            out[centre] = CentreDelivery(
                via="dc09", address=where["address"], protocol=dc09.protocol if dc09 else "tcp", accounts=accounts,
                format=dc09.format if dc09 else "adm-cid",
                key_file=lab.resolve(dc09.key_file) if dc09 is not None and dc09.key_file else None,
            )
        elif probe.via == "scaip":
            known = probe.scaip.devices if probe.scaip else {}
            accounts = {device: cid_did.split("/", 1)[0] for cid_did, device in known.items()}
            transport = probe.scaip.transport if probe.scaip else "udp"
            out[centre] = CentreDelivery(
                via="scaip",
                address=where["address"],
                protocol="tcp" if transport == "tcp" else "udp",
                accounts=accounts,
            )
    return out


def _epj_target(lab: Lab, listeners: Mapping[str, Any]) -> Any:
    """The patient-record probe the lab pushes to, with a client key generated for it by the probe; for a
    probe that pulls, what the lab records (it keeps it in its own FHIR API, see _fhir_api) and no push."""
    from harness.lab.config import EpjTarget

    records = listeners.get("records") or {}
    if not records:
        return None
    probe = next(iter(records.values()))
    if probe.pulls:
        s = probe.settings
        return EpjTarget(
            orgnr=s.orgnr,
            alert_codes=dict(s.alert_codes),
            alarm_codes=dict(s.alarm_codes),
            supervision_code=s.supervision_code,
        )
    endpoint = probe.endpoint(generate_client=True)
    settings = endpoint.settings
    return EpjTarget(
        base_url=endpoint.base_url.rsplit("/", 1)[0],
        orgnr=endpoint.orgnr,
        token_url=endpoint.token_url,
        client_id=endpoint.client.client_id,
        client_key=endpoint.client.private_key,
        ca=endpoint.ca,
        alert_codes=dict(settings.alert_codes),
        alarm_codes=dict(settings.alarm_codes),
        supervision_code=settings.supervision_code,
    )


def _fhir_api(listeners: Mapping[str, Any], epj: Any, pki: TestPki, off: frozenset[str]) -> Any:
    """The lab's own read-only FHIR API of what it records, with the lab's server certificate. A probe that
    pulls reads it: its public key is registered, and it learns the address (a port chosen here, since the
    probe polls from before the lab is up)."""
    import socket

    from harness.lab.config import FhirApiSettings

    probe = next(iter((listeners.get("records") or {}).values()))
    clients: dict[str, Path] = {}
    port = 0
    if probe.pulls:
        client_id, public_key = probe.reader_key()
        clients[client_id] = public_key
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    settings = FhirApiSettings(
        port=port,
        orgnr=epj.orgnr,
        cert=pki.server_cert,
        key=pki.server_key,
        ca=pki.ca_cert,
        clients=clients,
        require_token="fhir_token" not in off,
        alert_codes=dict(epj.alert_codes),
    )
    if probe.pulls:
        origin = f"https://{settings.host}:{port}"
        probe.pull_from(f"{origin}/fhir/{epj.orgnr}", f"{origin}/connect/token", pki.ca_cert)
    return settings


def _gateway_device(lab: Lab, device_id: str, bridges: list[Any]) -> Any:
    """How the lab's gateway reads a serial or BLE device of the lab file (None: the device speaks IP)."""
    from devices.catalog import CATALOG
    from harness.lab.config import GatewayDevice

    dev = lab.spec.devices[device_id]
    if dev.via == "serial":
        serial = dev.serial
        if serial is None or serial.mode != "simulate":
            return None  # an observed real device is read by vtlab itself, not by the lab
        from harness.links.serial import default_pty_link

        port = serial.port or default_pty_link(device_id)
        profile = serial.profile
        local = lab.path.parent / profile
        return GatewayDevice(
            model=dev.model,
            serial=port,
            profile=str(local) if local.is_file() else profile,
            baudrate=serial.baudrate,
            frame_timeout_s=parse_duration(serial.frame_timeout) / 1e9,
        )
    if dev.via == "ble":
        from harness.lab.ble_bridge import AirBridge
        from harness.links.ble import BleDeviceSettings, air

        ble = dev.ble or BleDeviceSettings()
        if ble.address is None:
            raise InputError(
                f"device `{device_id}` speaks BLE but has no address: the lab's gateway cannot find it",
                place=str(lab.src.place("devices", device_id)),
                fix='add ble: {address: "C0:00:00:00:AA:01"} (a random static address)',
            )
        observed = getattr(ble, "mode", "simulate") == "observe"
        if observed or not ble.radio.startswith("emulated:"):
            raise InputError(
                f"device `{device_id}` is on a real radio ({'observed' if observed else ble.radio}): "
                "the embedded lab's gateway reads BLE devices on vtlab's emulated radio only",
                place=str(lab.src.place("devices", device_id, "ble")),
                fix="against the embedded lab use radio: emulated:bench; a real device is read by the supplier's "
                "gateway (a lab file with platform: {kind: external})",
            )
        traits = CATALOG.get(dev.model)
        meter = bool(ble.profile or (traits.ble_profile if traits else None))
        bridge = AirBridge(air(ble.radio), f"lab-gw-{device_id}")
        bridges.append(bridge)
        return GatewayDevice(
            model=dev.model, ble_hci=bridge.spec, ble_address=ble.address, ble_role="meter" if meter else "advertiser"
        )
    return None


def embedded_target(lab: Lab, faults: str, listeners: Mapping[str, Any] | None = None) -> EmbeddedTarget:
    """`listeners`: where vtlab's listening probes are (harness.run.testbed.TestBed.prepare), for routes to them."""
    bridges: list[Any] = []
    try:
        return _embedded_target(lab, faults, listeners, bridges)
    except BaseException:
        for bridge in bridges:
            bridge.close()
        raise


def _embedded_target(lab: Lab, faults: str, listeners: Mapping[str, Any] | None, bridges: list[Any]) -> EmbeddedTarget:
    spec = lab.spec
    off = switched_off(lab)
    tls_on = spec.mqtt.url.startswith("mqtts://")
    version = "3.1.1" if spec.platform.broker == "amqtt" else spec.mqtt.version  # amqtt speaks 3.1.1 only
    centres = list(dict.fromkeys([*spec.centres, *(p.centre for p in spec.probes.values() if p.centre)]))
    devices = {d: _device_settings(lab, d) for d in spec.devices}
    for d in spec.devices:
        gw = _gateway_device(lab, d, bridges)
        if gw is not None:
            devices[d] = devices[d].model_copy(update={"gateway": gw})
    scaip_tls_devices = [d for d, dev in spec.devices.items() if dev.scaip is not None and dev.scaip.transport == "tls"]
    scaip_plain_devices = [
        d for d, dev in spec.devices.items() if dev.scaip is not None and dev.scaip.transport != "tls"
    ]
    scaip_tls = bool(scaip_tls_devices)
    ingress = IngressSettings(
        dc09_require_encryption="dc09_encryption" not in off,
        dc09_window="dc09_window" not in off,
        scaip_tls=False,  # switched on below, with the lab's server certificate
        scaip_plain=bool(scaip_plain_devices) or not scaip_tls or "scaip_tls" in off,
    )
    epj = _epj_target(lab, listeners or {})
    if epj is not None and "epj_token" in off:
        epj = epj.model_copy(update={"send_token": False})
    config = LabConfig(
        broker=BrokerSettings(
            kind=spec.platform.broker,
            mqtt_version=version,
            access_rules="access_rules" not in off and "client_cert" not in off,
            bind_client_ids="bind_client_ids" not in off and "client_cert" not in off,
            tls_min_version="1.1" if "tls_version" in off else "1.2",
            ciphers="ALL:eNULL:@SECLEVEL=0" if "weak_ciphers" in off else None,
        ),
        site=spec.site,
        topics=Topics(**spec.topics),
        devices=devices,
        ingress=ingress,
        validate_messages="validate_messages" not in off,
        delivery=_deliveries(lab, listeners or {}),
        epj=epj,
        centres=centres,
        routing={p.id: p.centre for p in lab.personas.values()},
        default_centre=None,
        supervision=SupervisionSettings(misses=spec.platform.supervision_misses),
        faults=faults,
        local_time=spec.platform.local_time,
    )
    if not tls_on and not scaip_tls and epj is None:  # the lab's FHIR API needs its certificate too
        return EmbeddedTarget(config, None, bridges, off)
    pki_dir = Path(tempfile.mkdtemp(prefix="vtlab-pki-"))
    try:
        pki = make_pki(pki_dir, clients=tuple(config.identities()), keep_ca_key=False)
    except BaseException:
        shutil.rmtree(pki_dir, ignore_errors=True)
        raise
    updates: dict[str, Any] = {"pki_dir": pki_dir}
    if epj is not None:
        updates["fhir_api"] = _fhir_api(listeners or {}, epj, pki, off)
    if scaip_tls:
        updates["ingress"] = ingress.model_copy(
            update={"scaip_tls": True, "tls_cert": pki.server_cert, "tls_key": pki.server_key}
        )
    if tls_on:
        router, control = pki.clients[ROUTER_IDENTITY], pki.clients[CONTROL_IDENTITY]
        tls = TlsSettings(
            ca=pki.ca_cert,
            server_cert=pki.server_cert,
            server_key=pki.server_key,
            require_client_cert="client_cert" not in off,
            client_cert=router.cert,
            client_key=router.key,
            control_cert=control.cert,
            control_key=control.key,
        )
        updates["broker"] = config.broker.model_copy(update={"tls": tls})
    config = config.model_copy(update=updates)
    return EmbeddedTarget(config, pki, bridges, off)
