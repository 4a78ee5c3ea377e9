"""The lab file: what the target is (the embedded reference lab or a supplier's platform), how to reach
it, where alarms must arrive (probes), which devices exist and which synthetic user each belongs to."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.errors import InputError
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
        if not (v.startswith("mqtt://") or v.startswith("mqtts://")):
            raise InputError(f"`{v}` is not an MQTT URL", fix="write mqtt://host:port or mqtts://host:port")
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
    tls: bool = Field(
        False,
        description="embedded only: serve MQTT over TLS with a throw-away CA and require client certificates",
    )


class Centre(_Model):
    name: str


class Probe(_Model):
    kind: Literal["response_centre"] = "response_centre"
    centre: str = Field(description="Id of the response centre this probe receives for")
    via: str = Field("mqtt", description="Transport the probe receives on (`vtlab steps` lists them)")


class Device(_Model):
    model: str = Field(description="Device model, e.g. safety_alarm (see `vtlab steps`)")
    user: str = Field(description="Synthetic test user (persona id) the device belongs to")
    heartbeat: str = Field("60s", description="Heartbeat interval the device is configured with")
    via: str = Field("mqtt", description="Transport the device speaks (`vtlab steps` lists them)")

    @field_validator("heartbeat")
    @classmethod
    def _dur(cls, v: str) -> str:
        parse_duration(v)
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
    devices: dict[str, Device]

    @field_validator("topics")
    @classmethod
    def _topics(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = set(v) - set(DEFAULT_TOPICS)
        if unknown:
            raise InputError(f"unknown topic name(s) {sorted(unknown)}", fix=f"use {sorted(DEFAULT_TOPICS)}")
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
    for dev_id, dev in spec.devices.items():
        if dev.user not in personas:
            raise InputError(
                f"device `{dev_id}` belongs to unknown user `{dev.user}`",
                place=src.place("devices", dev_id, "user"),
                fix=f"use a persona id from {spec.users}: {sorted(personas)}",
            )
    tls = spec.mqtt.tls
    if tls is not None:
        for field in ("ca", "cert", "key"):
            rel = getattr(tls, field)
            if rel and not (path.parent / rel).exists():
                raise InputError(
                    f"TLS {field} file `{rel}` not found (looked for {(path.parent / rel).resolve()})",
                    place=src.place("mqtt", "tls", field),
                    fix="give a path relative to the lab file, or generate the certificates first",
                )
        if tls.key_password_env and tls.key_password_env not in os.environ:
            raise InputError(
                f"environment variable `{tls.key_password_env}` (key passphrase) is not set",
                place=src.place("mqtt", "tls", "key_password_env"),
                fix=f"export {tls.key_password_env}=... before the run",
            )
    if spec.mqtt.password_env and spec.mqtt.password_env not in os.environ:
        raise InputError(
            f"environment variable `{spec.mqtt.password_env}` (broker password) is not set",
            place=src.place("mqtt", "password_env"),
            fix=f"export {spec.mqtt.password_env}=... before the run",
        )
    return Lab(spec, src, personas)
