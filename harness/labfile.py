"""The lab file: what the target is (the embedded reference lab or a supplier's platform), how to reach
it, where alarms must arrive (probes), which devices exist and which synthetic user each belongs to."""

from __future__ import annotations

import os
import re
import stat
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.errors import InputError, suggest
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
MAX_TOPIC = 1024
"""Longest topic template (an MQTT topic may be 65535 bytes; a vtlab topic is a few dozen characters)."""
_HHMM = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _time_of_day(v: Any, what: str) -> str:
    """`v` as a 24-hour time of day HH:MM; YAML reads an unquoted 14:00 as a number (minutes), so say so."""
    if isinstance(v, int) and not isinstance(v, bool):
        raise InputError(f"{what} was read as the number {v}: YAML takes an unquoted 14:00 for minutes",
                         fix='quote the time, e.g. "14:00"')
    if not isinstance(v, str) or not _HHMM.match(v):
        raise InputError(f"{what} `{v}` is not a time of day HH:MM", fix='write 24-hour time, e.g. "22:00" or "07:00"')
    return v
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
    time_scale: float = Field(
        1, ge=1, le=3600, description="embedded only: supervision time runs this many times faster on the reference "
        "lab and the simulated devices (heartbeat intervals and supervision deadlines divided by it), so that "
        "minute-long heartbeats can be tested in seconds; scenarios with `time_scaled: true` write operational "
        "durations and are reported in them. 1 = real time")
    profile: Literal["secure", "insecure"] = Field(
        "secure", description="embedded only: secure (every protection on) or insecure (those in `insecure:` off, "
        "all of them when the list is empty); see harness/reference_lab.py PROTECTIONS")
    insecure: list[str] = Field(default_factory=list, description="embedded only, with profile insecure: the "
                                "protections switched off, e.g. [tls_version, weak_ciphers, bind_client_ids]")
    local_time: str | None = Field(
        None, description='embedded only: the reference lab\'s wall clock for time-of-day rules (a wandering plan\'s '
        'night) starts at this local time of day, e.g. "03:00", when the lab starts, and runs on; default: the '
        "machine's local time (Europe/Oslo)")

    @field_validator("local_time", mode="before")
    @classmethod
    def _local_time(cls, v: Any) -> Any:
        return None if v is None else _time_of_day(v, "platform.local_time")

    @model_validator(mode="before")
    @classmethod
    def _one_switch_each(cls, data: Any) -> Any:
        if isinstance(data, dict) and "tls" in data:
            raise InputError("`platform.tls` is gone: TLS follows the scheme of mqtt.url",
                             fix="remove `tls:` here and write mqtt.url as mqtts://... (or mqtt:// without TLS)")
        if isinstance(data, dict) and data.get("kind") == "external":
            embedded_only = [k for k in ("broker", "faults", "supervision_misses", "profile", "insecure", "time_scale",
                                       "local_time") if k in data]
            if embedded_only:
                raise InputError(
                    f"`{', '.join(embedded_only)}` only apply to the embedded reference lab, not to an external "
                    "platform (vtlab cannot inject faults into a supplier's platform)",
                    fix=f"remove {', '.join(embedded_only)} from `platform:`, or use `kind: embedded`",
                )
        return data


class Centre(_Model):
    name: str


def _within(what: str, low: str, high: str, example: str) -> Any:
    """A validator for a duration between `low` and `high` (inclusive), refused with `what` and an example."""
    low_ns, high_ns = parse_duration(low), parse_duration(high)

    def check(v: str) -> str:
        if not low_ns <= parse_duration(v) <= high_ns:
            raise InputError(f"{what} of {v} is outside {low}..{high}", fix=f"write e.g. {example}")
        return v

    return check


def _address(v: str | None) -> str | None:
    if v is None:
        return v
    host, sep, port = v.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 <= int(port) <= 65535:
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
    format: Literal["adm-cid", "sia-dcs"] = Field(
        "adm-cid", description="centre: the data the platform delivers in (vtlab's centre reads both; the embedded "
        "lab sends this one)")
    sia_codes: dict[str, str] = Field(
        default_factory=lambda: {"YC": "356/1", "YK": "356/3"},
        description="centre: SIA-DCS event code -> Contact ID `code/qualifier` where the SIA table maps several "
        "Contact ID codes to one (default: communication fail / restore as loss / restore of supervision)")

    @field_validator("sia_codes")
    @classmethod
    def _sia_codes(cls, v: dict[str, str]) -> dict[str, str]:
        for code, cid in v.items():
            if not re.fullmatch(r"[A-Z]{2}", code) or not re.fullmatch(r"[0-9]{3}/[136]", cid):
                raise InputError(f"`{code}: {cid}` in dc09.sia_codes is not `<SIA code>: <code>/<qualifier>`",
                                 fix='write e.g. sia_codes: {YC: "356/1", YK: "356/3"}')
        return v

    _to = field_validator("to", "backup", "listen")(_address)


class ScaipLink(_Model):
    """SCAIP (SS 91100) over SIP settings of a device or a centre. A device sends `<mrq>` in SIP MESSAGE
    requests to `to` (the platform's SCAIP receiver; leave it out for the embedded lab) as controller
    `cid`, device `did`; a centre listens on `listen` and knows which (cid, did) is which device."""

    to: str | None = Field(None, description="device: HOST:PORT of the platform's SCAIP receiver")
    listen: str | None = Field(None, description="centre: HOST:PORT to listen on (port 0 = free)")
    transport: Literal["udp", "tcp", "tls"] = "udp"
    ca: str | None = Field(None, description="device, with transport tls: CA file that signs the platform's SIP "
                           "certificate, relative to the lab file (default: mqtt.tls.ca; the embedded lab's own)")
    cid: str | None = Field(None, pattern=r"^[0-9]{1,16}$", description="device: controller id (digits)")
    did: str | None = Field(None, pattern=r"^[0-9A-Za-z]{1,8}$", description="device: device id (<= 8 chars)")
    devices: dict[str, str] = Field(default_factory=dict,
                                    description="centre: `<cid>/<did>` the platform sends -> device id in this "
                                    "file (default: each device's own)")
    zone_element: Literal["dco"] = Field("dco", description="the element carrying the per-alarm number")
    raised: dict[str, str] = Field(
        default_factory=lambda: {"0023": "356/1", "0112": "356/3"},
        description="centre: `stc` -> Contact ID `code/qualifier` of what the platform raises itself and sends "
        "in SCAIP (default: loss of supervision 356 as 0023 IP connection failure, its restore as 0112); a "
        "device's own events are read by its model's stc first")

    @field_validator("raised")
    @classmethod
    def _raised(cls, v: dict[str, str]) -> dict[str, str]:
        for stc, code in v.items():
            if not re.fullmatch(r"[0-9]{4}", stc) or not re.fullmatch(r"[0-9]{3}/[136]", code):
                raise InputError(f"`{stc}: {code}` in scaip.raised is not `<4-digit stc>: <code>/<qualifier>`",
                                 fix='write e.g. raised: {"0023": "356/1", "0112": "356/3"}')
        return v

    _addr = field_validator("to", "listen")(_address)


class EpjSettings(_Model):
    """A patient-record probe: a FHIR R4 endpoint shaped like the welfare-technology hub (VKP) that the
    platform pushes to, with HelseID-shaped tokens (private_key_jwt); or, with `mode: pull`, a reader that
    searches the platform's own FHIR API for what it recorded (the embedded lab: its own API)."""

    mode: Literal["push", "pull"] = Field("push", description="push: the platform pushes to vtlab's endpoint "
                                          "(VKP); pull: vtlab polls the platform's FHIR API by search")

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
    api: str | None = Field(None, description="pull: the platform's FHIR base URL (default: the lab file's "
                            "`fhir.url`; leave both out for the embedded lab: vtlab reads the reference lab's own API)")
    ca: str | None = Field(None, description="pull: CA file (PEM) of the API's certificate, relative to the lab file "
                           "(default: `fhir.ca` when the API is on the same origin as `fhir.url`)")
    token_url: str | None = Field(None, description="pull: the HelseID token endpoint vtlab asks for its read token "
                                  "(default: <origin of api>/connect/token)")
    client_id: str | None = Field(None, description="pull: vtlab's client id at the token endpoint (private_key_jwt)")
    key_file: str | None = Field(None, description="pull: vtlab's private key (PEM) for private_key_jwt, relative to "
                                 "the lab file; never a key in this file")
    interval: str = Field("2s", description="pull: how often vtlab searches (a record's arrival is the answer that "
                          "first lists it, so epj_latency includes up to one interval)")
    resources: list[str] = Field(default_factory=lambda: ["DetectedIssue", "Encounter", "Composition",
                                                          "MedicationDispense", "Observation"],
                                 description="pull: the resource types searched")
    skew: str = Field("5s", description="pull: clock-skew allowance: the first search asks for records last updated "
                      "from the run's start minus this, never earlier (0s..5m)")
    timeout: str = Field("10s", description="pull: how long one search may take before it counts as failed "
                         "(a finding), 100ms..2m")

    _addr = field_validator("listen")(_address)

    _interval = field_validator("interval")(_within("a poll interval", "100ms", "10m", "interval: 2s"))
    _skew = field_validator("skew")(_within("a clock-skew allowance", "0s", "5m", "skew: 5s"))
    _timeout = field_validator("timeout")(_within("a search timeout", "100ms", "2m", "timeout: 10s"))

    @field_validator("api", "token_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and (urlsplit(v).scheme not in ("https", "http") or not urlsplit(v).hostname):
            raise InputError(f"`{v}` is not an HTTP(S) URL", fix="write https://host[:port]/path")
        return v


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
            if len(template) > MAX_TOPIC:
                raise InputError(
                    f"topic `{name}` is {len(template)} characters long",
                    fix=f"write a topic of at most {MAX_TOPIC} characters, like the default `{DEFAULT_TOPICS[name]}`",
                )
            try:
                parts = list(string.Formatter().parse(template))
            except ValueError as exc:
                raise InputError(f"topic `{name}`: {exc} in `{template}`",
                                 fix="write placeholders as {site}, {device} or {centre}") from None
            fields = {f for _, f, _, _ in parts if f is not None}
            if any(spec or conversion for _, f, spec, conversion in parts if f is not None):
                raise InputError(
                    f"topic `{name}` has a format spec or conversion in a placeholder (`{{name:...}}`, `{{name!r}}`)",
                    fix="write placeholders plainly as {site}, {device} or {centre}",
                )
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


_QUANTITY = re.compile(r"^-?[0-9]{1,9}(\.[0-9]{1,6})? [A-Za-z%/\[\]]{1,16}$")


class Threshold(_Model):
    """One reading's limits in a user's follow-up plan: beyond them the platform must raise a follow-up
    alarm. Values with their unit as the meter reports it, e.g. `160 mmHg`."""

    min: str | None = Field(None, description="below this: follow-up alarm, e.g. '90 %'")
    max: str | None = Field(None, description="above this: follow-up alarm, e.g. '160 mmHg'")

    @field_validator("min", "max")
    @classmethod
    def _quantity(cls, v: str | None) -> str | None:
        if v is not None and not _QUANTITY.match(v):
            raise InputError(f"`{v}` is not a value with its unit", fix="write e.g. '160 mmHg' or '90 %'")
        return v

    @model_validator(mode="after")
    def _one_unit(self) -> Threshold:
        if self.min is None and self.max is None:
            raise InputError("a threshold names neither min nor max", fix="write e.g. {max: 160 mmHg}")
        units = {v.split(" ", 1)[1] for v in (self.min, self.max) if v is not None}
        if len(units) > 1:
            raise InputError(f"min and max have different units: {sorted(units)}", fix="use the meter's unit for both")
        return self


class Wandering(_Model):
    """A user's wandering plan (vandringsplan): the events (a door opening) that must raise an alarm in the
    night window; outside it the platform records them and raises none. Times are local (Europe/Oslo)."""

    night: str = Field(description='the alarm window, HH:MM-HH:MM local time; may cross midnight, e.g. "22:00-07:00"')
    events: list[str] = Field(description="device events the plan is about, e.g. [door_open]")

    @field_validator("night", mode="before")
    @classmethod
    def _night(cls, v: Any) -> str:
        fix = 'write the window as "HH:MM-HH:MM", e.g. night: "22:00-07:00"'
        if not isinstance(v, str) or v.count("-") != 1:
            raise InputError(f"wandering.night `{v}` is not a window HH:MM-HH:MM", fix=fix)
        start, end = (_time_of_day(t.strip(), "wandering.night") for t in v.split("-"))
        if start == end:
            raise InputError(f"wandering.night `{v}` starts and ends at the same time", fix=fix)
        return f"{start}-{end}"

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        from harness.plugins import device_models

        if not v:
            raise InputError("a wandering plan names no events", fix="write e.g. events: [door_open]")
        known = {e for m in device_models().values() for e, spec in m.events.items() if spec.wire}
        for event in v:
            if event not in known:
                raise InputError(f"wandering.events: no device model has event `{event}`",
                                 fix=f"{suggest(event, sorted(known))}use device events such as door_open "
                                 "(see docs/devices.md)")
        return v

    @property
    def window(self) -> tuple[str, str]:
        start, end = self.night.split("-")
        return start, end


class Persona(_Model):
    id: str
    name: str
    born: int
    address: str
    municipality: str
    centre: str
    notes: str = ""
    thresholds: dict[str, Threshold] = Field(
        default_factory=dict, description="follow-up plan: reading name (systolic, spo2, ...) -> its limits")
    wandering: Wandering | None = Field(
        None, description="wandering plan: door events are an alarm in the night window, recorded outside it")


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

    def pull_api(self, probe: str) -> PullApi | None:
        """Where a pulling patient-record probe reads: its own `api`, else the lab file's `fhir.url` for a
        supplier's platform (None: the embedded lab's own API, known when the lab starts)."""
        epj = self.spec.probes[probe].epj
        if epj is None or epj.mode != "pull":
            return None
        return _pull_api(self.spec, epj, self.path.parent)

    def redacted(self) -> dict[str, object]:
        """The lab file as data, safe for evidence and reports (names of secret variables only)."""
        return self.spec.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class PullApi:
    """The FHIR API a pulling probe reads and the CA file (resolved) that signed its certificate."""

    url: str
    ca: Path | None


def _pull_api(spec: LabFile, epj: EpjSettings, folder: Path) -> PullApi | None:
    """`api` and `ca` of the probe, falling back to `fhir:` for a supplier's platform; the CA of `fhir:` also
    serves an `api` on the same origin (the same server)."""
    fhir = spec.fhir
    url = epj.api
    if url is None:
        if spec.platform.kind == "embedded" or fhir is None:
            return None
        url = fhir.url
    ca = epj.ca
    if ca is None and fhir is not None and fhir.ca and urlsplit(url)[:2] == urlsplit(fhir.url)[:2]:
        ca = fhir.ca
    return PullApi(url, _resolved(folder / ca) if ca else None)


def _check_pull(spec: LabFile, src: SourceFile, name: str, epj: EpjSettings, folder: Path) -> None:
    """A pulling probe knows which API to read and how to get its token (the embedded lab: its own API)."""
    if epj.mode != "pull":
        return
    place = src.place("probes", name, "epj")
    api = _pull_api(spec, epj, folder)
    own_api = api is None
    if own_api and spec.platform.kind != "embedded":
        raise InputError(f"probe `{name}` pulls, but names no FHIR API to pull from", place=place,
                         fix="add `api: https://platform.example/fhir/<orgnr>` (the platform's FHIR base URL), "
                         "or the platform's `fhir: {url: ..., ca: ...}` at the top of the lab file")
    if api is not None and api.ca is not None and (problem := file_problem(api.ca)):
        raise InputError(f"the CA file of the FHIR API probe `{name}` reads ({api.ca}) {problem}", place=place,
                         fix="give `ca:` (here or under `fhir:`) as a path relative to the lab file")
    if not own_api and not (epj.client_id and epj.key_file):
        raise InputError(f"probe `{name}` pulls from the platform's API but has no client to get a token with",
                         place=place, fix="add client_id and key_file (vtlab's private key, PEM) for private_key_jwt")
    for field in ("key_file", "ca"):
        rel = getattr(epj, field)
        if rel and (problem := file_problem(folder / rel)):
            raise InputError(f"{field} `{rel}` of probe `{name}` {problem} (looked for {_resolved(folder / rel)})",
                             place=place, fix="give a path relative to the lab file")


def file_problem(file: Path) -> str | None:
    """Why `file` (named in a lab file) cannot be used as a regular file, or None when it can. Never raises:
    a name too long for the file system, a loop of links or a device is an answer, not a crash."""
    try:
        st = os.stat(file)
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot be opened ({exc.strerror or type(exc).__name__})"
    if stat.S_ISDIR(st.st_mode):
        return "is a folder, not a file"
    return None if stat.S_ISREG(st.st_mode) else "is not a regular file (a device, pipe or socket)"


def _resolved(file: Path) -> Path:
    """`file` resolved where it can be (a loop of links or an unreadable folder leaves it as written)."""
    try:
        return file.resolve()
    except (OSError, RuntimeError):
        return file.absolute()


def _head(file: Path, size: int = 65536) -> bytes:
    """The first bytes of a regular file (not the whole file, which might be huge)."""
    try:
        with open(file, "rb") as fh:
            return fh.read(size)
    except OSError:
        return b""


def load_lab(path: Path) -> Lab:
    src = load_yaml(path, "lab")
    spec = src.validate(LabFile)
    users_path = _resolved(path.parent / spec.users)
    if problem := file_problem(users_path):
        raise InputError(
            f"users file `{spec.users}` {problem} (looked for {users_path})",
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
            _check_pull(spec, src, name, probe.epj, path.parent)
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
    for name, probe in spec.probes.items():
        if probe.via == "scaip" and probe.scaip is not None and probe.scaip.transport == "tls":
            raise InputError(
                f"probe `{name}`: a SCAIP response centre on SIP/TLS is not supported yet (devices can use it)",
                place=src.place("probes", name, "scaip", "transport"),
                fix="give the centre `transport: udp` or `tcp`",
            )
    from harness.plugins import device_models

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
        scale = spec.platform.time_scale
        if scale != 1 and parse_duration(dev.heartbeat) / scale < 100_000_000:
            raise InputError(f"device `{dev_id}`: a heartbeat every {dev.heartbeat} compressed {scale:g} times is "
                             "shorter than 100ms", place=src.place("devices", dev_id, "heartbeat"),
                             fix="lower platform.time_scale or write the device's real heartbeat interval")
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
            if problem := file_problem(file):
                raise InputError(
                    f"TLS {field} file `{rel}` {problem} (looked for {_resolved(file)})",
                    place=src.place("mqtt", "tls", field),
                    fix="give a path relative to the lab file, or generate the certificates first",
                )
            if b"-----BEGIN " not in _head(file):
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
