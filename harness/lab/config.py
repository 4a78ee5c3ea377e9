"""The JSON config the harness hands the reference lab (`python -m harness.lab --config FILE.json`).

Topic names and MQTT defaults are those of the lab file (`harness/labfile.py`), so the two cannot
disagree; the fault grammar is `harness.faults` alone. Ids (site, devices, centres) are restricted to
letters, digits and `-_.` because they become topic levels, certificate names and broker ACL lines.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from harness.errors import InputError
from harness.faults import parse_faults
from harness.identities import (  # re-exported: the lab's names for its identities
    CONTROL_IDENTITY,
    ROUTER_IDENTITY,
    centre_identity,
    device_identity,
    twin_identity,
)
from harness.lab.wandering import HHMM, WanderingPlan

__all__ = [
    "CONTROL_IDENTITY",
    "ROUTER_IDENTITY",
    "AccessRule",
    "BrokerSettings",
    "CentreDelivery",
    "DeviceSettings",
    "EpjTarget",
    "FhirApiSettings",
    "GatewayDevice",
    "IngressSettings",
    "LabConfig",
    "Limits",
    "MappingProfile",
    "ScaipIdentity",
    "StcRule",
    "SupervisionSettings",
    "TlsSettings",
    "Topics",
    "centre_identity",
    "device_identity",
    "load_config",
]

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


def _check_id(what: str, value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(
            f"{what} `{value[:80]}` may hold only letters, digits and -_. (at most 64, starting with a letter or digit)"
        )
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Model):
    """PEM paths. server_* are used when the lab starts its own broker; client_* by the lab's router
    (identity `lab`); control_* by the harness's control client (identity `harness`)."""

    ca: Path
    server_cert: Path | None = None
    server_key: Path | None = None
    require_client_cert: bool = True
    client_cert: Path | None = None
    client_key: Path | None = None
    control_cert: Path | None = None
    control_key: Path | None = None


class BrokerSettings(_Model):
    kind: Literal["auto", "mosquitto", "amqtt"] = "auto"
    external_url: str | None = Field(default=None, description="mqtt://host:port of an existing broker")
    mqtt_version: Literal["3.1.1", "5"] = "5"
    tls: TlsSettings | None = None
    access_rules: bool = Field(
        default=True,
        description="with client certificates: give every identity only its own topics (broker ACL)",
    )
    tls_min_version: Literal["1.1", "1.2", "1.3"] = Field(
        default="1.2", description="oldest TLS version the lab's broker accepts (1.1: the insecure profile)"
    )
    ciphers: str | None = Field(
        default=None,
        description="OpenSSL cipher list for TLS <= 1.2 (None: mosquitto's default; the insecure profile "
        "offers `ALL:eNULL:@SECLEVEL=0`)",
    )
    bind_client_ids: bool = Field(
        default=True,
        description="with client certificates: the client id is the certificate's CN (mosquitto "
        "use_username_as_clientid), so no identity can take over another's session; each identity then "
        "holds one connection at a time",
    )

    @field_validator("ciphers")
    @classmethod
    def _ciphers(cls, v: str | None) -> str | None:
        if v is not None and (not v or any(c in v for c in " \n\r\t\x00#")):
            raise ValueError("write an OpenSSL cipher list without spaces, e.g. ALL:eNULL:@SECLEVEL=0")
        return v

    @field_validator("external_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith(("mqtt://", "mqtts://"))):
            raise ValueError("write mqtt://host:port or mqtts://host:port")
        return v


class Topics(_Model):
    """Topic templates per docs/wire.md, under the lab file's names; {site}, {device}, {centre} are filled in."""

    device_event: str = "vtlab/{site}/device/{device}/event"
    device_heartbeat: str = "vtlab/{site}/device/{device}/heartbeat"
    centre_alarm: str = "vtlab/{site}/centre/{centre}/alarm"
    centre_ack: str = "vtlab/{site}/centre/{centre}/ack"
    device_ack: str = "vtlab/{site}/device/{device}/ack"
    lab_control: str = "vtlab/{site}/lab/control"

    @model_validator(mode="after")
    def _templates(self) -> Topics:
        need = {
            "device_event": {"device"},
            "device_heartbeat": {"device"},
            "device_ack": {"device"},
            "centre_alarm": {"centre"},
            "centre_ack": {"centre"},
            "lab_control": set(),
        }
        for name, required in need.items():
            template: str = getattr(self, name)
            if not template or any(c in template for c in "+#\n\r\t \x00"):
                raise ValueError(f"topic `{name}` must be a topic name without spaces, `+` or `#`")
            used = set(_PLACEHOLDER_RE.findall(template))
            unknown = used - {"site", "device", "centre"}
            if unknown:
                raise ValueError(f"topic `{name}` has unknown placeholder(s) {sorted(unknown)}")
            for placeholder in used:  # each placeholder must be a whole topic level
                if not any(level == "{" + placeholder + "}" for level in template.split("/")):
                    raise ValueError(f"topic `{name}`: {{{placeholder}}} must be a whole topic level")
            if not required <= used:
                raise ValueError(f"topic `{name}` must contain {', '.join('{' + r + '}' for r in sorted(required))}")
        return self


class ScaipIdentity(_Model):
    """How a SCAIP device names itself in its `<mrq>`: controller id, device id (optional), device type."""

    cid: str = Field(pattern=r"^[0-9]{1,16}$", description="controller id (1-16 digits)")
    did: str | None = Field(default=None, min_length=1, max_length=8, description="device id (<= 8 chars)")
    dty: str = Field(default="0003", pattern=r"^[0-9]{1,4}$", description="device type (0003 personal trigger)")


class GatewayDevice(_Model):
    """How the lab, in its gateway role (a home hub or tablet), reads a device: a serial line with a profile
    (`serial`: the pty path of a simulated device, /dev/ttyUSB0, rfc2217://, socket://) or BLE (`ble_hci`:
    a Bumble transport spec of the controller the lab's central uses, e.g. tcp-client:127.0.0.1:PORT
    bridged onto vtlab's emulated air; `ble_address`: the peripheral; `ble_role`: a meter read over GATT
    or an alarm button heard by its advertisements)."""

    model: str = Field(min_length=1, max_length=64, description="device model (devices/catalog.py)")
    serial: str | None = None
    profile: str | None = Field(default=None, description="serial profile name or file")
    baudrate: int = Field(default=9600, gt=0)
    frame_timeout_s: float = Field(default=0.5, gt=0)
    ble_hci: str | None = None
    ble_address: str | None = Field(default=None, pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")
    ble_role: Literal["meter", "advertiser"] = "meter"

    @model_validator(mode="after")
    def _one_link(self) -> GatewayDevice:
        if (self.serial is None) == (self.ble_hci is None):
            raise ValueError("a gateway device has either `serial` (with `profile`) or `ble_hci` (with `ble_address`)")
        if self.serial is not None and not self.profile:
            raise ValueError("a serial gateway device needs `profile`")
        if self.ble_hci is not None and not self.ble_address:
            raise ValueError("a BLE gateway device needs `ble_address`")
        return self


class ReadingLimits(_Model):
    unit: str = Field(min_length=1, max_length=16)
    min: Decimal | None = None
    max: Decimal | None = None

    def beyond(self, value: Decimal, unit: str) -> str | None:
        """Why `value` is beyond these limits (None when within, or in another unit)."""
        if unit != self.unit:
            return None
        if self.max is not None and value > self.max:
            return f"{value} {unit} > {self.max} {unit}"
        if self.min is not None and value < self.min:
            return f"{value} {unit} < {self.min} {unit}"
        return None


class DeviceSettings(_Model):
    user: str | None = None
    centre: str | None = None
    heartbeat_interval_s: float | None = Field(default=None, gt=0)
    dc09_account: str | None = Field(
        default=None, pattern=r"^[0-9A-Fa-f]{3,16}$", description="DC-09 account the device transmits as"
    )
    dc09_key_file: Path | None = Field(default=None, description="file holding the device's AES key (16/24/32 chars)")
    scaip: ScaipIdentity | None = None
    dc09_require_encryption: bool | None = Field(
        default=None, description="per account: refuse plaintext (None: ingress.dc09_require_encryption)"
    )
    gateway: GatewayDevice | None = Field(
        default=None, description="the lab reads this device as its home gateway (serial line or BLE)"
    )
    thresholds: dict[str, ReadingLimits] = Field(
        default_factory=dict, description="the user's follow-up plan: reading name -> limits; a reading beyond "
        "them raises a follow-up alarm"
    )
    wandering: WanderingPlan | None = Field(
        default=None, description="the user's wandering plan: its events are alarms in its night, recorded outside it"
    )


class StcRule(_Model):
    """One SCAIP status code as the lab's internal alarm: Contact ID code and qualifier, event name, priority."""

    code: str = Field(pattern=r"^[0-9]{3}$")
    qualifier: Literal["1", "3", "6"] = "1"
    event: str = Field(min_length=1, max_length=64)
    priority: int = Field(default=1, ge=1, le=9)


DEFAULT_STC: dict[str, StcRule] = {
    "0010": StcRule(code="101", event="personal_emergency", priority=1),  # manual alarm
    "0009": StcRule(code="100", event="fall_detected", priority=1),  # automatic alarm (fall detector)
    "0110": StcRule(code="101", event="assistance", priority=2),
    "0016": StcRule(code="302", event="low_battery", priority=4),
    "0014": StcRule(code="302", event="battery_failure", priority=3),
    "0015": StcRule(code="302", qualifier="3", event="battery_ok", priority=5),
    "0081": StcRule(code="100", event="dose_missed", priority=2),  # no Contact ID code for doses: 100 medical
    "0083": StcRule(code="100", qualifier="3", event="dose_taken", priority=5),
    "0085": StcRule(code="301", event="power_failure", priority=3),
    "0086": StcRule(code="301", qualifier="3", event="power_restored", priority=5),
    "0023": StcRule(code="350", event="communication_trouble", priority=3),
    "0112": StcRule(code="350", qualifier="3", event="communication_restored", priority=5),
    "0102": StcRule(code="602", event="test_transmission", priority=5),
    "0103": StcRule(code="602", event="test_transmission", priority=5),
}
"""SCAIP `stc` -> Contact ID: the lab's default mapping profile (PROTOCOLS.md sections 3 and 4)."""

DEFAULT_CODE_STC: dict[str, str] = {"356/1": "0023", "356/3": "0112"}
"""Contact ID -> SCAIP `stc` where the reverse of the stc table is not what a centre expects: loss of
supervision (356) goes out as IP connection failure / re-established."""

DEFAULT_CODE_EVENTS: dict[str, str] = {
    "100": "fall_detected",
    "101": "personal_emergency",
    "120": "panic",
    "301": "power_failure",
    "302": "low_battery",
    "350": "communication_trouble",
    "356": "supervision_failure",
    "601": "test_transmission",
    "602": "test_transmission",
}
"""Contact ID code -> event name, for alarms that arrive without one (DC-09)."""


class MappingProfile(_Model):
    """How the lab turns SCAIP and DC-09 fields into its alarm and back (PROTOCOLS.md section 4: a platform
    maps per receiving centre; this is the lab's one profile)."""

    stc: dict[str, StcRule] = Field(default_factory=lambda: dict(DEFAULT_STC))
    code_stc: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_CODE_STC),
        description="`code` or `code/qualifier` -> stc for SCAIP delivery (before the reverse of `stc`)",
    )
    code_events: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CODE_EVENTS))
    zone_from: Literal["dco", "none"] = Field(
        default="dco", description="SCAIP field that becomes the Contact ID zone (3 digits; `none`: zone 000)"
    )
    partition: str = Field(default="01", pattern=r"^[0-9B-F]{2}$", description="Contact ID partition sent")
    dty_for_code: dict[str, str] = Field(
        default_factory=lambda: {"100": "0005", "101": "0003"},
        description="device type sent over SCAIP for devices without a SCAIP identity",
    )

    @field_validator("stc")
    @classmethod
    def _stc_keys(cls, v: dict[str, StcRule]) -> dict[str, StcRule]:
        out = {}
        for k, rule in v.items():
            if not re.fullmatch(r"[0-9]{1,4}", k):
                raise ValueError(f"stc `{k[:20]}` must be 1-4 digits")
            out[k.zfill(4)] = rule
        return out

    def rule_for(self, stc: str | None) -> StcRule | None:
        if stc is None or not stc.isdigit():
            return None
        return self.stc.get(stc.zfill(4))

    def stc_for(self, code: str, qualifier: str) -> str | None:
        """The SCAIP status code a centre gets for a Contact ID code (and qualifier)."""
        hit = self.code_stc.get(f"{code}/{qualifier}") or self.code_stc.get(code)
        if hit:
            return hit
        for stc, rule in self.stc.items():
            if rule.code == code and rule.qualifier == qualifier:
                return stc
        return None

    def event_for(self, code: str) -> str:
        return self.code_events.get(code) or f"contact_id_{code}"


class CentreDelivery(_Model):
    """How a response centre receives alarms: `mqtt` (the lab's JSON on the centre topic), `dc09` (ADM-CID
    frames with the lab's own sequence numbers) or `scaip` (an `<mrq>` in a SIP MESSAGE)."""

    via: Literal["mqtt", "dc09", "scaip"] = "mqtt"
    address: str | None = Field(default=None, description="dc09/scaip: HOST:PORT of the centre's receiver")
    protocol: Literal["tcp", "udp"] = Field(default="tcp", description="dc09/scaip transport")
    accounts: dict[str, str] = Field(
        default_factory=dict,
        description="device id -> account (dc09) or controller id (scaip) the centre knows it by "
        "(default: the device's dc09_account / SCAIP cid)",
    )
    key_file: Path | None = Field(default=None, description="dc09: file holding the AES key of this line")
    format: Literal["adm-cid", "sia-dcs"] = Field(
        default="adm-cid", description="dc09: Contact ID (ADM-CID) or SIA DC-03 (SIA-DCS) data, as the centre expects")
    receiver: str = Field(default="0", pattern=r"^[0-9A-Fa-f]{1,6}$")
    line: str = Field(default="0", pattern=r"^[0-9A-Fa-f]{1,6}$")
    timeout_s: float = Field(default=5.0, gt=0, description="wait for each ACK / mrs")
    retries: int = Field(default=2, ge=0, le=10)
    ack_device: bool = Field(
        default=True, description="an MQTT device gets a device ack (`received`) when this centre's ACK/mrs arrives"
    )

    @model_validator(mode="after")
    def _address_needed(self) -> CentreDelivery:
        if self.via != "mqtt":
            if not self.address:
                raise ValueError(f"a centre that receives over {self.via} needs `address: HOST:PORT`")
            host, _, port = self.address.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"address `{self.address[:80]}`: write HOST:PORT")
        return self


class IngressSettings(_Model):
    """The lab's DC-09 and SCAIP receivers (TCP and UDP on one port each). `None`: on when a device uses it.

    Security switches (the lab file's `platform.profile`): `dc09_require_encryption` (an account with a key
    refuses plaintext with DUH), `dc09_window` (off: no timestamp window, a replay is ACKed),
    `scaip_tls` (a SIP-over-TLS listener with the lab's server certificate) and `scaip_plain` (the plain
    UDP/TCP listeners; secure with TLS: off)."""

    host: str = "127.0.0.1"
    dc09: bool | None = None
    dc09_port: int = Field(default=0, ge=0, lt=65536)
    scaip: bool | None = None
    scaip_port: int = Field(default=0, ge=0, lt=65536)
    dc09_window_s: tuple[float, float] = Field(
        default=(40.0, 20.0), description="DC-09 timestamp window: seconds behind, ahead of the lab's clock"
    )
    dc09_window: bool = Field(default=True, description="refuse (NAK) a timestamp outside dc09_window_s (off: replay)")
    dc09_require_encryption: bool = Field(
        default=True, description="an account with a key refuses unencrypted messages (DUH)"
    )
    scaip_plain: bool = Field(default=True, description="SCAIP over plain UDP and TCP")
    scaip_tls: bool = Field(default=False, description="SCAIP over SIP/TLS (needs tls_cert and tls_key)")
    scaip_tls_port: int = Field(default=0, ge=0, lt=65536)
    tls_cert: Path | None = Field(default=None, description="server certificate (PEM) of the SCAIP TLS listener")
    tls_key: Path | None = None
    tls_ca: Path | None = Field(default=None, description="CA of device certificates (given: devices must present one)")

    @model_validator(mode="after")
    def _tls_files(self) -> IngressSettings:
        if self.scaip_tls and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("scaip_tls needs tls_cert and tls_key")
        return self


class EpjTarget(_Model):
    """What the lab records in the patient record (VKP-shaped FHIR) and where it pushes it over HTTPS.
    Without `base_url` it pushes nowhere: the records stay in the lab's own FHIR API (`fhir_api`), read
    by whoever polls it (the pull pattern)."""

    base_url: str | None = Field(
        default=None, description="FHIR base, e.g. https://host:port/epj/r4 (the orgnr is appended); None: no push"
    )
    orgnr: str = Field(pattern=r"^[0-9]{9}$")
    token_url: str | None = None
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    client_key: Path | None = Field(default=None, description="PEM file of the client's private key (private_key_jwt)")
    ca: Path | None = Field(default=None, description="CA file to verify the FHIR and token servers")
    scopes: tuple[str, ...] = (
        "nhn:vkp/api/user/detectedissue.write",
        "nhn:vkp/api/user/encounter.write",
        "nhn:vkp/api/user/composition.write",
        "nhn:vkp/api/user/medicationdispense.write",
        "nhn:vkp/api/user/observation.write",
    )
    patient_system: str = Field(default="urn:oid:2.16.578.1.12.4.1.4.1", description="identifier system (FNR)")
    patients: dict[str, str] = Field(
        default_factory=dict, description="user id -> patient identifier (default: the synthetic user's id)"
    )
    alert_codes: dict[str, str] = Field(
        default_factory=dict, description="VKP alert codes the supplier uses beyond 1.1/1.17/1.19: code -> display"
    )
    alarm_codes: dict[str, str] = Field(
        default_factory=dict,
        description="Contact ID code -> VKP alert code of a handled alarm (`*` for every other code)",
    )
    supervision_code: str | None = Field(default=None, description="VKP alert code for loss of supervision (356)")
    bundle_type: Literal["transaction", "message"] = "transaction"
    faults: bool = Field(default=False, description="apply the drop/delay/outage faults to pushes too")
    timeout_s: float = Field(default=10.0, gt=0)
    push_handled: bool = True
    push_low_battery: bool = True
    push_supervision: bool = True
    push_doses: bool = True
    send_token: bool = Field(
        default=True,
        description="the lab (the platform side) pushes with a HelseID token; off, it pushes without one and "
        "the patient-record probe, which always requires one, refuses every push (401)",
    )

    @field_validator("base_url", "token_url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("https://", "http://")):
            raise ValueError("write an https:// URL")
        return v.rstrip("/") if v is not None else None

    @model_validator(mode="after")
    def _push_needs_client(self) -> EpjTarget:
        if self.base_url is not None and None in (self.token_url, self.client_id, self.client_key):
            raise ValueError("pushing to base_url needs token_url, client_id and client_key")
        return self

    @property
    def pushes(self) -> bool:
        return self.base_url is not None

    @property
    def fhir_url(self) -> str:
        """The organisation's FHIR base the Bundles are POSTed to."""
        assert self.base_url is not None, "no push target"
        return self.base_url if self.base_url.endswith("/" + self.orgnr) else f"{self.base_url}/{self.orgnr}"

    def patient_id(self, user: str | None) -> str | None:
        if user is None:
            return None
        return self.patients.get(user, user)


class FhirApiSettings(_Model):
    """The lab's own read-only FHIR R4 API (harness.lab.fhir_api): searches of what it recorded, over HTTPS
    with the lab's server certificate, with tokens from its own HelseID-shaped endpoint (`/connect/token`,
    private_key_jwt) for the clients listed here. Base URL: https://host:port/fhir/<orgnr>."""

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, lt=65536)
    orgnr: str = Field(pattern=r"^[0-9]{9}$")
    cert: Path = Field(description="server certificate (PEM)")
    key: Path = Field(description="server key (PEM)")
    ca: Path | None = Field(default=None, description="the CA that signed `cert` (named in the ready line)")
    clients: dict[str, Path] = Field(
        default_factory=dict, description="client id -> public key file (PEM) allowed to read, by private_key_jwt"
    )
    require_token: bool = Field(default=True, description="off (the insecure profile): anyone may read the records")
    max_count: int = Field(default=100, ge=1, le=1000, description="the largest search page")
    alert_codes: dict[str, str] = Field(default_factory=dict, description="VKP alert codes beyond the standard ones")


class SupervisionSettings(_Model):
    enabled: bool = True
    misses: int = Field(default=2, ge=1, description="heartbeat intervals missed before raising 356")


DC09_CONNECTIONS = 10_240
"""The DC-09 receiver's default connection limit: a fleet of 10,000 transmitters on kept TCP connections."""
DC09_CONNECTIONS_MAX = 60_000
"""Bounded below the port range of one address: beyond it the limit protects nothing."""


class Limits(_Model):
    """Bounds that keep the lab's memory flat under hostile input (see benchmarks/lab_memory_under_flood.py)."""

    cids_per_device: int = Field(default=1024, ge=1, description="routed cids remembered per device, for acks")
    pending_delayed: int = Field(default=10_000, ge=1, description="alarms held at once for a delay fault")
    max_packet_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        description="the lab's own broker refuses bigger MQTT packets (mosquitto); the codec refuses >16 KiB payloads",
    )
    heartbeat_interval_s: tuple[float, float] = Field(
        default=(0.01, 86_400.0), description="accepted range of a heartbeat's interval_s"
    )
    pending_deliveries: int = Field(
        default=10_000, ge=1, description="alarms waiting at once for a DC-09/SCAIP centre to answer"
    )
    pending_pushes: int = Field(default=1_000, ge=1, description="FHIR pushes waiting at once")
    dc09_connections: int = Field(
        default=DC09_CONNECTIONS, ge=1, le=DC09_CONNECTIONS_MAX,
        description="TCP connections the DC-09 receiver keeps at once (one per transmitter; a fleet of 10,000 "
        "devices needs 10,000; each holds a file descriptor and a reading task)",
    )
    record_only_events: tuple[str, ...] = Field(
        default=("dose_taken",), description="events recorded (EPJ) but never routed to a centre"
    )


class AccessRule(_Model):
    """One broker permission: `identity` may publish to / subscribe to `topic_filter`."""

    identity: str
    access: Literal["publish", "subscribe"]
    topic_filter: str


class _DeviceLookup:
    """Devices by DC-09 account (upper case) and by SCAIP (cid, did); `scaip_any_did` holds, per cid, the
    first device configured without a did (it answers any did). First in the devices' order wins, as the
    scan it replaces did (LabConfig's validator makes accounts and (cid, did) pairs unique anyway)."""

    __slots__ = ("accounts", "devices", "scaip", "scaip_any_did", "size")

    def __eq__(self, other: object) -> bool:
        """A cache derived from the devices table: two configs are equal by their fields, never by this."""
        return isinstance(other, _DeviceLookup)

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, devices: dict[str, DeviceSettings]) -> None:
        self.devices = devices
        self.size = len(devices)
        self.accounts: dict[str, str] = {}
        self.scaip: dict[tuple[str, str | None], str] = {}
        self.scaip_any_did: dict[str, str] = {}

    @classmethod
    def of(cls, devices: dict[str, DeviceSettings]) -> _DeviceLookup:
        index = cls(devices)
        for d, settings in devices.items():
            if settings.dc09_account:
                index.accounts.setdefault(settings.dc09_account.upper(), d)
            s = settings.scaip
            if s is not None:
                index.scaip.setdefault((s.cid, s.did), d)
                if s.did is None:
                    index.scaip_any_did.setdefault(s.cid, d)
        return index


class LabConfig(_Model):
    broker: BrokerSettings = BrokerSettings()
    site: str = "lab"
    topics: Topics = Topics()
    devices: dict[str, DeviceSettings] = {}
    centres: list[str] = Field(
        default_factory=list,
        description="response centres of the lab; when given, alarms go to no other centre",
    )
    routing: dict[str, str] = Field(default_factory=dict, description="user id -> centre id")
    default_centre: str | None = Field(default=None, description="for known devices whose user has no route")
    delivery: dict[str, CentreDelivery] = Field(
        default_factory=dict, description="centre id -> how it receives (absent: mqtt)"
    )
    ingress: IngressSettings = IngressSettings()
    mapping: MappingProfile = MappingProfile()
    epj: EpjTarget | None = None
    fhir_api: FhirApiSettings | None = Field(default=None, description="the lab's own FHIR API of its records")
    supervision: SupervisionSettings = SupervisionSettings()
    limits: Limits = Limits()
    validate_messages: bool = Field(
        default=True,
        description="refuse an event whose payload device is not its topic's device and an ack from a centre "
        "for an alarm routed to another (off: pass them through, as a careless platform does)",
    )
    faults: str = ""
    local_time: str | None = Field(
        default=None, pattern=HHMM, description="the lab's clock for time-of-day rules starts at this local time of "
        "day (HH:MM) and runs on; None: the machine's clock in `timezone`"
    )
    timezone: str = "Europe/Oslo"
    ledger: Path | None = None
    log: Path | None = None
    pki_dir: Path | None = Field(
        default=None, description="throw-away certificates: the lab deletes this folder when it exits"
    )

    @field_validator("faults")
    @classmethod
    def _faults(cls, v: str) -> str:
        return str(parse_faults(v, "lab config `faults`"))

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        return _check_id("site", v)

    _lookup: _DeviceLookup | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _ids(self) -> LabConfig:
        for d, settings in self.devices.items():
            _check_id("device id", d)
            if settings.centre is not None:
                _check_id("centre id", settings.centre)
        for c in self.delivery:
            _check_id("centre id", c)
        accounts: dict[str, str] = {}
        scaip_ids: dict[tuple[str, str | None], str] = {}
        for d, settings in self.devices.items():
            if settings.dc09_account:
                other = accounts.setdefault(settings.dc09_account.upper(), d)
                if other != d:
                    raise ValueError(f"devices `{other}` and `{d}` share dc09_account {settings.dc09_account}")
            if settings.scaip:
                who = (settings.scaip.cid, settings.scaip.did)
                other = scaip_ids.setdefault(who, d)
                if other != d:
                    raise ValueError(f"devices `{other}` and `{d}` share SCAIP cid/did {who}")
        for c in [*self.centres, *self.routing.values(), *([self.default_centre] if self.default_centre else [])]:
            _check_id("centre id", c)
        if self.centres:
            known = set(self.centres)
            named = {s.centre for s in self.devices.values() if s.centre} | set(self.routing.values())
            if self.default_centre:
                named.add(self.default_centre)
            stray = sorted(named - known)
            if stray:
                raise ValueError(f"centre(s) {stray} are routed to but not listed in `centres`")
        self._lookup = _DeviceLookup.of(self.devices)  # once, as the config loads
        return self

    def centre_for(self, device: str, user: str | None) -> str | None:
        """The centre for a known device (None for an unknown one): its own, its user's, or the default."""
        d = self.devices.get(device)
        if d is None:
            return None
        if d.centre:
            return d.centre
        who = d.user or user
        if who and who in self.routing:
            return self.routing[who]
        return self.default_centre

    def topic(self, name: str, **fill: str) -> str:
        template: str = getattr(self.topics, name)
        return template.format(site=self.site, **fill)

    def topic_filter(self, name: str) -> str:
        """The subscription filter of a template: every device and centre (`+`)."""
        return self.topic(name, device="+", centre="+")

    def all_centres(self) -> list[str]:
        """Every centre this config can route to."""
        named = [s.centre for s in self.devices.values() if s.centre] + list(self.routing.values())
        if self.default_centre:
            named.append(self.default_centre)
        return list(dict.fromkeys([*self.centres, *named]))

    def delivery_for(self, centre: str) -> CentreDelivery:
        return self.delivery.get(centre) or CentreDelivery()

    def dc09_ingress_on(self) -> bool:
        on = self.ingress.dc09
        return any(d.dc09_account for d in self.devices.values()) if on is None else on

    def scaip_ingress_on(self) -> bool:
        on = self.ingress.scaip
        return any(d.scaip for d in self.devices.values()) if on is None else on

    def device_for_account(self, account: str) -> str | None:
        """The device whose `dc09_account` is `account` (hex digits compare without case)."""
        return self._index().accounts.get(account.upper())

    def device_for_scaip(self, cid: str, did: str | None) -> str | None:
        """The device whose SCAIP (cid, did) match; a device configured without `did` matches any did."""
        index = self._index()
        exact = index.scaip.get((cid, did))
        return exact if exact is not None else index.scaip_any_did.get(cid)

    def _index(self) -> _DeviceLookup:
        """The device lookups, built once per devices table: every DC-09 frame and SCAIP `<mrq>` asks, and a
        fleet has thousands of devices (a scan per alarm would cost the lab O(devices))."""
        lookup = self._lookup
        if lookup is None or lookup.devices is not self.devices or lookup.size != len(self.devices):
            lookup = self._lookup = _DeviceLookup.of(self.devices)
        return lookup

    def identities(self) -> list[str]:
        """Certificate CNs of the lab: router, control client, each device, each centre."""
        return [
            ROUTER_IDENTITY,
            CONTROL_IDENTITY,
            *(device_identity(d) for d in self.devices),
            *(centre_identity(c) for c in self.all_centres()),
            *(twin_identity(device_identity(d)) for d in self.devices),
            *(twin_identity(centre_identity(c)) for c in self.all_centres()),
        ]

    def access_rules(self) -> list[AccessRule]:
        """Who may do what: a device its own event/heartbeat and ack; a centre its own alarms and acks; the
        router all events, heartbeats and centre acks in, centre alarms and device acks out; the control
        topic is written by the harness alone and read by the router."""
        rules: list[AccessRule] = []

        def allow(identity: str, access: Literal["publish", "subscribe"], topic: str) -> None:
            rules.append(AccessRule(identity=identity, access=access, topic_filter=topic))

        for name in ("device_event", "device_heartbeat", "centre_ack", "lab_control"):
            allow(ROUTER_IDENTITY, "subscribe", self.topic_filter(name))
        for name in ("centre_alarm", "device_ack"):
            allow(ROUTER_IDENTITY, "publish", self.topic_filter(name))
        allow(CONTROL_IDENTITY, "publish", self.topic("lab_control"))
        for d in self.devices:
            for who in (device_identity(d), twin_identity(device_identity(d))):
                allow(who, "publish", self.topic("device_event", device=d))
                allow(who, "publish", self.topic("device_heartbeat", device=d))
                allow(who, "subscribe", self.topic("device_ack", device=d))
        for c in self.all_centres():
            for who in (centre_identity(c), twin_identity(centre_identity(c))):
                allow(who, "subscribe", self.topic("centre_alarm", centre=c))
                allow(who, "publish", self.topic("centre_ack", centre=c))
        return rules

    def to_json(self) -> str:
        return self.model_dump_json(indent=2, exclude_none=True)


def load_config(path: Path) -> LabConfig:
    """Read and validate a lab config file; InputError names the file and the field."""
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(
            "no such file",
            place=str(path),
            fix="pass --config with the path of a lab JSON file",
        ) from None
    except json.JSONDecodeError as e:
        raise InputError(
            f"not valid JSON: {e.msg}",
            place=f"{path}:{e.lineno}",
            fix="fix the JSON syntax",
        ) from None
    if isinstance(raw, dict) and isinstance(raw.get("faults"), str):
        parse_faults(raw["faults"], str(path))  # the fault grammar's own message, naming this file
    try:
        return LabConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise InputError(
            f"`{where}`: {first['msg']}",
            place=str(path),
            fix="see harness/lab/config.py for the fields",
        ) from None
