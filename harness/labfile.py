"""The lab file: what the target is (the embedded reference lab or a supplier's platform), how to reach
it, where alarms must arrive (probes), which devices exist and which synthetic user each belongs to."""

from __future__ import annotations

import os
import string
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import InputError
from harness.links.ble import BleDeviceSettings
from harness.links.serial import SerialDeviceSettings
from harness.units import parse_duration
from harness.yamlfile import SourceFile, load_yaml

DEFAULT_TOPICS = {
    "device_event": "vtlab/{site}/device/{device}/event",
    "device_heartbeat": "vtlab/{site}/device/{device}/heartbeat",
    "device_ack": "vtlab/{site}/device/{device}/ack",
    "centre_alarm": "vtlab/{site}/centre/{centre}/alarm",
    "centre_ack": "vtlab/{site}/centre/{centre}/ack",
    "lab_control": "vtlab/{site}/lab/control",
}


MIN_HEARTBEAT_NS = 100_000_000
MAX_HEARTBEAT_NS = 24 * 3600 * 1_000_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Tls(_Model):
    """TLS towards the broker. Paths are relative to the lab file."""

    ca: str | None = Field(None, description="CA certificate (PEM) that signed the broker's certificate")
    cert: str | None = Field(None, description="Client certificate (PEM), for brokers that require one")
    key: str | None = Field(None, description="Client private key (PEM)")
    key_password_env: str | None = Field(None, description="Environment variable holding the key's passphrase")
    verify: bool = Field(True, description="Verify the broker's certificate; turning it off is noted in the report")


class Mqtt(_Model):
    url: str = Field(
        "mqtt://127.0.0.1:1883",
        description="mqtt://host:port or mqtts://host:port; for the embedded lab the port is chosen at start",
    )
    version: Literal["3.1.1", "5"] = "5"
    tls: Tls | None = None
    username: str | None = None
    password_env: str | None = Field(None, description="Environment variable holding the broker password")
    connect_timeout: str = "5s"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        fix = "write mqtt://host:port or mqtts://host:port (TLS follows the scheme)"
        try:
            parts = urlsplit(v)
            port = parts.port
        except ValueError as exc:
            raise InputError(f"`{v}` is not a usable MQTT URL: {exc}", fix=fix) from None
        if parts.scheme not in ("mqtt", "mqtts"):
            raise InputError(f"`{v}` is not an MQTT URL", fix=fix)
        if not parts.hostname:
            raise InputError(f"`{v}` names no host", fix=fix)
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
            raise InputError(f"`{v}` has parts an MQTT URL does not use (path, query, credentials)",
                             fix=fix + "; credentials go in username and password_env")
        if port is not None and not 0 <= port <= 65535:
            raise InputError(f"port {port} is out of range", fix=fix)
        return v

    @field_validator("connect_timeout")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
        return v


class Platform(_Model):
    kind: Literal["embedded", "external"] = Field(
        "embedded", description="embedded: vtlab starts its reference lab; external: a supplier's platform"
    )
    broker: Literal["auto", "mosquitto", "amqtt"] = Field(
        "auto", description="embedded only: which broker the reference lab runs (auto prefers mosquitto)"
    )
    faults: str = Field("", description="embedded only: faults to inject, e.g. drop=0.03,delay=400ms@0.1")
    supervision_misses: int = Field(2, ge=1, description="embedded only: heartbeats missed before loss of supervision")
    profile: Literal["secure", "insecure"] = Field(
        "secure", description="embedded only: secure (every protection on) or insecure (those in `insecure:` off, "
        "all of them when the list is empty); see harness/reference_lab.py PROTECTIONS")
    insecure: list[str] = Field(default_factory=list, description="embedded only, with profile insecure: the "
                                "protections switched off, e.g. [tls_version, weak_ciphers, bind_client_ids]")

    @model_validator(mode="before")
    @classmethod
    def _one_switch_each(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tls" in data:
            raise InputError("`platform.tls` is gone: TLS follows the scheme of mqtt.url",
                             fix="remove `tls:` here and write mqtt.url as mqtts://... (or mqtt:// without TLS)")
        if isinstance(data, dict) and data.get("kind") == "external":
            embedded_only = [k for k in ("broker", "faults", "supervision_misses", "profile", "insecure") if k in data]
            if embedded_only:
                raise InputError(
                    f"`{', '.join(embedded_only)}` only apply to the embedded reference lab, not to an external "
                    "platform (vtlab cannot inject faults into a supplier's platform)",
                    fix=f"remove {', '.join(embedded_only)} from `platform:`, or use `kind: embedded`",
                )
        return data


class Centre(_Model):
    name: str


def _address(v: str | None) -> str | None:
    if v is None:
        return v
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InputError(f"`{v}` is not HOST:PORT", fix="write e.g. 127.0.0.1:10500 (port 0: any free port)")
    return v


class Dc09Link(_Model):
    """SIA DC-09 settings of a device (an alarm transmitter) or a centre (an alarm receiving centre).

    A device sends ADM-CID (Contact ID) frames to `to` (the platform's receiver; for the embedded lab,
    leave it out); a centre listens on `listen` and knows each account it serves. Keys come from an
    environment variable or a file, never from this file."""

    to: str | None = Field(None, description="device: HOST:PORT of the platform's DC-09 receiver")
    backup: str | None = Field(None, description="device: HOST:PORT of the backup path")
    listen: str | None = Field(None, description="centre: HOST:PORT to listen on (TCP and UDP; port 0 = free)")
    protocol: Literal["tcp", "udp"] = "tcp"
    account: str | None = Field(None, pattern=r"^[0-9A-Fa-f]{3,16}$",
                                description="device: its account number (hex digits)")
    accounts: dict[str, str] = Field(default_factory=dict,
                                     description="centre: account the platform sends -> device id in this file "
                                     "(default: each device's own account)")
    key_env: str | None = Field(None, description="environment variable holding the AES key (16/24/32 chars)")
    key_file: str | None = Field(None, description="file holding the AES key, relative to the lab file")
    receiver: str = Field("0", pattern=r"^[0-9A-Fa-f]{1,6}$")
    line: str = Field("0", pattern=r"^[0-9A-Fa-f]{1,6}$")
    timeout: str = Field("5s", description="device: how long to wait for each ACK")
    zones: int = Field(999, ge=1, le=999, description="device: zone numbers cycled through, one per alarm in "
                       "flight (a platform that keeps fewer distinct zones needs fewer)")

    _to = field_validator("to", "backup", "listen")(_address)


class ScaipLink(_Model):
    """SCAIP (SS 91100) over SIP settings of a device or a centre. A device sends `<mrq>` in SIP MESSAGE
    requests to `to` (the platform's SCAIP receiver; leave it out for the embedded lab) as controller
    `cid`, device `did`; a centre listens on `listen` and knows which (cid, did) is which device."""

    to: str | None = Field(None, description="device: HOST:PORT of the platform's SCAIP receiver")
    listen: str | None = Field(None, description="centre: HOST:PORT to listen on (port 0 = free)")
    transport: Literal["udp", "tcp", "tls"] = "udp"
    cid: str | None = Field(None, pattern=r"^[0-9]{1,16}$", description="device: controller id (digits)")
    did: str | None = Field(None, pattern=r"^[0-9A-Za-z]{1,8}$", description="device: device id (<= 8 chars)")
    devices: dict[str, str] = Field(default_factory=dict,
                                    description="centre: `<cid>/<did>` the platform sends -> device id in this "
                                    "file (default: each device's own)")
    zone_element: Literal["dco"] = Field("dco", description="the element carrying the per-alarm number")

    _addr = field_validator("to", "listen")(_address)


class EpjSettings(_Model):
    """A patient-record probe: a FHIR R4 endpoint shaped like the welfare-technology hub (VKP) that the
    platform pushes to, with HelseID-shaped tokens (private_key_jwt)."""

    orgnr: str = Field(pattern=r"^[0-9]{9}$", description="the municipality's organisation number in the URL")
    listen: str = Field("127.0.0.1:0", description="HOST:PORT of the HTTPS endpoint (port 0 = free)")
    clients: dict[str, str] = Field(default_factory=dict, description="client id -> public key file (PEM) of a "
                                    "supplier's platform allowed to push (the embedded lab gets its own)")
    strict: bool = Field(True, description="refuse (422) valid FHIR with VKP findings, as a profile-checking hub")
    alert_codes: dict[str, str] = Field(default_factory=dict, description="VKP alert codes the supplier uses "
                                        "beyond 1.1, 1.17 and 1.19: code -> display (accepted by the probe)")
    alarm_codes: dict[str, str] = Field(default_factory=dict, description="embedded lab: Contact ID code (or `*`) "
                                        "-> VKP alert code it records a handled alarm with")
    supervision_code: str | None = Field(None, description="embedded lab: VKP alert code for loss of supervision")

    _addr = field_validator("listen")(_address)


class Probe(_Model):
    kind: Literal["response_centre", "epj"] = "response_centre"
    centre: str | None = Field(None, description="response_centre: id of the centre this probe receives for")
    epj: EpjSettings | None = Field(None, description="epj: the patient-record endpoint's settings")
    via: str = Field("mqtt", description="Transport the probe receives on (`vtlab steps` lists them)")
    dc09: Dc09Link | None = Field(None, description="with via: dc09: where the centre listens, its accounts")
    scaip: ScaipLink | None = Field(None, description="with via: scaip: where the centre listens, its devices")
    serial: SerialDeviceSettings | None = Field(None, description="with via: serial: a receiver's printer port")


class Device(_Model):
    model: str = Field(description="Device model, e.g. safety_alarm (see `vtlab steps`)")
    user: str = Field(description="Synthetic test user (persona id) the device belongs to")
    heartbeat: str = Field("60s", description="Heartbeat interval the device is configured with")
    via: str = Field("mqtt", description="Transport the device speaks (`vtlab steps` lists them)")
    dc09: Dc09Link | None = Field(None, description="with via: dc09: its account, key and the receiver address")
    scaip: ScaipLink | None = Field(None, description="with via: scaip: its cid, did and the receiver address")
    serial: SerialDeviceSettings | None = Field(
        None, description="with via: serial: profile, mode (simulate|observe), port")
    ble: BleDeviceSettings | None = Field(None, description="with via: ble: radio, address, report, profile, hold")

    @field_validator("heartbeat")
    @classmethod
    def _dur(cls, v: str) -> str:
        ns = parse_duration(v)
        if not MIN_HEARTBEAT_NS <= ns <= MAX_HEARTBEAT_NS:
            raise InputError(f"a heartbeat every {v} is outside 100ms..24h",
                             fix="write the device's real interval, e.g. 60s or 5m")
        return v


class FhirApi(_Model):
    """The platform's own FHIR API (for security checks, and for platforms that are read rather than push)."""

    url: str = Field(description="FHIR base URL, e.g. https://platform.example/fhir")
    ca: str | None = Field(None, description="CA file (PEM) of its server certificate, relative to the lab file")

    @field_validator("url")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InputError(f"`{v}` is not an HTTP(S) URL", fix="write https://host[:port]/path")
        return v


class SystemUnderTest(_Model):
    """What is being accepted, as the report's cover names it."""

    name: str = "Unnamed system"
    version: str = "unknown"
    firmware: dict[str, str] = Field(default_factory=dict, description="Device model -> firmware version")
    notes: str = ""


class TeamMember(_Model):
    name: str
    role: str
    organisation: str = ""


class LabFile(_Model):
    name: str
    description: str = ""
    system_under_test: SystemUnderTest = SystemUnderTest()
    test_team: list[TeamMember] = Field(default_factory=list, description="Who ran the test (for the report)")
    platform: Platform = Platform()
    mqtt: Mqtt = Mqtt()
    site: str = Field("lab", pattern=r"^[A-Za-z0-9_-]+$")
    topics: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_TOPICS))
    users: str = Field(description="YAML file of synthetic test users (personas), relative to the lab file")
    centres: dict[str, Centre]
    probes: dict[str, Probe]
    fhir: FhirApi | None = Field(None, description="the platform's FHIR API, where it has one")
    devices: dict[str, Device]

    @field_validator("topics")
    @classmethod
    def _topics(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(DEFAULT_TOPICS)
        if unknown:
            raise InputError(f"unknown topic name(s) {sorted(unknown)}", fix=f"use {sorted(DEFAULT_TOPICS)}")
        for name, template in v.items():
            needed = {"site"} | ({"device"} if name.startswith("device_") else set()) \
                | ({"centre"} if name.startswith("centre_") else set())
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
            except ValueError as exc:
                raise InputError(f"topic `{name}`: {exc} in `{template}`",
                                 fix="write placeholders as {site}, {device} or {centre}") from None
            allowed = {"site", "device", "centre"}
            if fields - allowed:
                raise InputError(f"topic `{name}` uses unknown placeholder(s) {sorted(fields - allowed)}",
                                 fix="use only {site}, {device} and {centre}")
            if needed - fields:
                raise InputError(f"topic `{name}` lacks {sorted(needed - fields)}",
                                 fix=f"write it like the default `{DEFAULT_TOPICS[name]}`")
            if any(c in template for c in "+#\x00"):
                raise InputError(f"topic `{name}` contains an MQTT wildcard or NUL", fix="remove +, # and NUL")
        return {**DEFAULT_TOPICS, **v}


class Persona(_Model):
    id: str
    name: str
    born: int
    address: str
    municipality: str
    centre: str
    notes: str = ""


class Personas(_Model):
    personas: list[Persona]


class Lab:
    """A loaded, cross-checked lab file with its users."""

    def __init__(self, spec: LabFile, src: SourceFile, personas: dict[str, Persona]):
        self.spec = spec
        self.src = src
        self.personas = personas

    @property
    def path(self) -> Path:
        return self.src.path

    def resolve(self, relative: str) -> Path:
        return (self.path.parent / relative).resolve()

    def expected_centre(self, device_id: str) -> str:
        return self.personas[self.spec.devices[device_id].user].centre

    def topic(self, name: str, **values: str) -> str:
        return self.spec.topics[name].format(site=self.spec.site, **values)

    def redacted(self) -> dict[str, object]:
        """The lab file as data, safe for evidence and reports (names of secret variables only)."""
        return self.spec.model_dump(mode="json")


def load_lab(path: Path) -> Lab:
    src = load_yaml(path, "lab")
    spec = src.validate(LabFile)
    users_path = (path.parent / spec.users).resolve()
    if not users_path.exists():
        raise InputError(
            f"users file `{spec.users}` not found (looked for {users_path})",
            place=src.place("users"),
            fix="point `users:` at the personas file, relative to the lab file",
        )
    users_src = load_yaml(users_path, "users")
    personas = {p.id: p for p in users_src.validate(Personas).personas}
    for pid, persona in personas.items():
        if persona.centre not in spec.centres:
            raise InputError(
                f"user `{pid}` belongs to centre `{persona.centre}`, which the lab file does not list",
                place=src.place("centres"),
                fix=f"add `{persona.centre}:` under centres, or correct the user's centre",
            )
    for name, probe in spec.probes.items():
        if probe.kind == "epj":
            if probe.epj is None:
                raise InputError(f"probe `{name}` is a patient-record probe without `epj:` settings",
                                 place=src.place("probes", name), fix="add `epj: {orgnr: '999999999'}`")
            continue
        if probe.centre not in spec.centres:
            raise InputError(
                f"probe `{name}` receives for unknown centre `{probe.centre}`",
                place=src.place("probes", name, "centre"),
                fix=f"use one of {sorted(spec.centres)}",
            )
    from harness.transports.registry import transport_kinds

    known = transport_kinds()
    for section, entries in (("devices", spec.devices), ("probes", spec.probes)):
        for name, entry in entries.items():
            if entry.via not in known:
                raise InputError(
                    f"{section[:-1]} `{name}` uses transport `{entry.via}`, which vtlab does not have",
                    place=src.place(section, name, "via"),
                    fix=f"use one of {sorted(known)}",
                )
    from harness.scenario.registry import device_models, suggest

    models = device_models()
    for dev_id, dev in spec.devices.items():
        if dev.model not in models:
            raise InputError(f"device `{dev_id}` has unknown model `{dev.model}`",
                             place=src.place("devices", dev_id, "model"),
                             fix=f"{suggest(dev.model, models)}use one of {sorted(models)}")
        if dev.via == "scaip" and (dev.scaip is None or not dev.scaip.cid):
            raise InputError(f"device `{dev_id}` uses via: scaip but has no SCAIP controller id",
                             place=src.place("devices", dev_id), fix="add `scaip: {cid: '4711', did: '1'}`")
        if dev.via == "dc09" and (dev.dc09 is None or not dev.dc09.account):
            raise InputError(f"device `{dev_id}` uses via: dc09 but has no DC-09 account",
                             place=src.place("devices", dev_id), fix="add `dc09: {account: '1234'}`")
    for dev_id, dev in spec.devices.items():
        if dev.user not in personas:
            raise InputError(
                f"device `{dev_id}` belongs to unknown user `{dev.user}`",
                place=src.place("devices", dev_id, "user"),
                fix=f"use a persona id from {spec.users}: {sorted(personas)}",
            )
    tls = spec.mqtt.tls
    if tls is not None:
        if not spec.mqtt.url.startswith("mqtts://"):
            raise InputError("`mqtt.tls` is given but mqtt.url is not mqtts://: the files would be ignored",
                             place=src.place("mqtt", "url"), fix="write the URL as mqtts://host:port")
        for field in ("ca", "cert", "key"):
            rel = getattr(tls, field)
            if not rel:
                continue
            file = path.parent / rel
            if not file.is_file():
                raise InputError(
                    f"TLS {field} file `{rel}` not found (looked for {file.resolve()})",
                    place=src.place("mqtt", "tls", field),
                    fix="give a path relative to the lab file, or generate the certificates first",
                )
            if b"-----BEGIN " not in file.read_bytes()[:65536]:
                raise InputError(f"TLS {field} file `{rel}` is not PEM", place=src.place("mqtt", "tls", field),
                                 fix="give the PEM file (text starting with -----BEGIN ...); convert DER with openssl")
        if bool(tls.cert) != bool(tls.key):
            raise InputError("a client certificate needs its key and a key its certificate",
                             place=src.place("mqtt", "tls"), fix="give both cert and key, or neither")
        if tls.key_password_env and tls.key_password_env not in os.environ:
            raise InputError(
                f"environment variable `{tls.key_password_env}` (key passphrase) is not set",
                place=src.place("mqtt", "tls", "key_password_env"),
                fix=f"export {tls.key_password_env}=... before the run",
            )
    if spec.platform.kind == "external" and urlsplit(spec.mqtt.url).port == 0:
        raise InputError(f"mqtt.url `{spec.mqtt.url}` has port 0, which only the embedded lab may choose",
                         place=src.place("mqtt", "url"), fix="write the broker's port, e.g. mqtts://broker.example:8883")
    if spec.mqtt.password_env and spec.mqtt.password_env not in os.environ:
        raise InputError(
            f"environment variable `{spec.mqtt.password_env}` (broker password) is not set",
            place=src.place("mqtt", "password_env"),
            fix=f"export {spec.mqtt.password_env}=... before the run",
        )
    return Lab(spec, src, personas)
