"""The JSON config the harness hands the reference lab (`python -m harness.lab --config FILE.json`).

Topic names and MQTT defaults are those of the lab file (`harness/labfile.py`), so the two cannot
disagree; the fault grammar is `harness.faults` alone. Ids (site, devices, centres) are restricted to
letters, digits and `-_.` because they become topic levels, certificate names and broker ACL lines.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.errors import InputError
from harness.faults import parse_faults

__all__ = [
    "CONTROL_IDENTITY",
    "ROUTER_IDENTITY",
    "AccessRule",
    "BrokerSettings",
    "DeviceSettings",
    "LabConfig",
    "Limits",
    "SupervisionSettings",
    "TlsSettings",
    "Topics",
    "centre_identity",
    "device_identity",
    "load_config",
]

ROUTER_IDENTITY = "lab"
"""Certificate CN (and broker user) of the lab's router."""
CONTROL_IDENTITY = "harness"
"""Certificate CN of the harness's control client: the only one that may change the lab's faults."""

ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")


def device_identity(device_id: str) -> str:
    """The certificate CN of a simulated device."""
    return f"device-{device_id}"


def centre_identity(centre_id: str) -> str:
    """The certificate CN of a response-centre probe."""
    return f"centre-{centre_id}"


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


class DeviceSettings(_Model):
    user: str | None = None
    centre: str | None = None
    heartbeat_interval_s: float | None = Field(default=None, gt=0)


class SupervisionSettings(_Model):
    enabled: bool = True
    misses: int = Field(default=2, ge=1, description="heartbeat intervals missed before raising 356")


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


class AccessRule(_Model):
    """One broker permission: `identity` may publish to / subscribe to `topic_filter`."""

    identity: str
    access: Literal["publish", "subscribe"]
    topic_filter: str


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
    supervision: SupervisionSettings = SupervisionSettings()
    limits: Limits = Limits()
    faults: str = ""
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

    @model_validator(mode="after")
    def _ids(self) -> LabConfig:
        for d, settings in self.devices.items():
            _check_id("device id", d)
            if settings.centre is not None:
                _check_id("centre id", settings.centre)
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

    def identities(self) -> list[str]:
        """Certificate CNs of the lab: router, control client, each device, each centre."""
        return [
            ROUTER_IDENTITY,
            CONTROL_IDENTITY,
            *(device_identity(d) for d in self.devices),
            *(centre_identity(c) for c in self.all_centres()),
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
            who = device_identity(d)
            allow(who, "publish", self.topic("device_event", device=d))
            allow(who, "publish", self.topic("device_heartbeat", device=d))
            allow(who, "subscribe", self.topic("device_ack", device=d))
        for c in self.all_centres():
            who = centre_identity(c)
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
