"""The JSON config the harness hands the reference lab (`python -m harness.lab --config FILE.json`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import InputError
from harness.lab.faults import parse_faults

__all__ = [
    "BrokerSettings",
    "DeviceSettings",
    "LabConfig",
    "SupervisionSettings",
    "TlsSettings",
    "Topics",
    "load_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Model):
    """PEM paths. The server_* files are used when the lab starts its own broker; client_* by the
    lab's MQTT client (and by LabProcess.set_faults) when the broker requires client certificates."""

    ca: Path
    server_cert: Path | None = None
    server_key: Path | None = None
    require_client_cert: bool = True
    client_cert: Path | None = None
    client_key: Path | None = None


class BrokerSettings(_Model):
    kind: Literal["auto", "mosquitto", "amqtt"] = "auto"
    external_url: str | None = Field(default=None, description="mqtt://host:port of an existing broker")
    mqtt_version: Literal["3.1.1", "5"] = "3.1.1"
    tls: TlsSettings | None = None

    @field_validator("external_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith(("mqtt://", "mqtts://"))):
            raise ValueError("write mqtt://host:port or mqtts://host:port")
        return v


class Topics(_Model):
    """Topic templates per docs/wire.md; {site}, {device}, {centre} are filled in."""

    event: str = "vtlab/{site}/device/{device}/event"
    heartbeat: str = "vtlab/{site}/device/{device}/heartbeat"
    centre_alarm: str = "vtlab/{site}/centre/{centre}/alarm"
    centre_ack: str = "vtlab/{site}/centre/{centre}/ack"
    device_ack: str = "vtlab/{site}/device/{device}/ack"
    control: str = "vtlab/{site}/lab/control"


class DeviceSettings(_Model):
    user: str | None = None
    centre: str | None = None
    heartbeat_interval_s: float | None = Field(default=None, gt=0)


class SupervisionSettings(_Model):
    enabled: bool = True
    misses: int = Field(default=2, ge=1, description="heartbeat intervals missed before raising 356")


class LabConfig(_Model):
    broker: BrokerSettings = BrokerSettings()
    site: str = "lab"
    topics: Topics = Topics()
    devices: dict[str, DeviceSettings] = {}
    routing: dict[str, str] = Field(default_factory=dict, description="user id -> centre id")
    default_centre: str | None = "rc-1"
    supervision: SupervisionSettings = SupervisionSettings()
    faults: str = ""
    ledger: Path | None = None
    log: Path | None = None

    @field_validator("faults")
    @classmethod
    def _faults(cls, v: str) -> str:
        parse_faults(v, "lab config `faults`")
        return v

    def centre_for(self, device: str, user: str | None) -> str | None:
        d = self.devices.get(device)
        if d and d.centre:
            return d.centre
        who = (d.user if d and d.user else None) or user
        if who and who in self.routing:
            return self.routing[who]
        return self.default_centre

    def topic(self, name: str, **fill: str) -> str:
        template: str = getattr(self.topics, name)
        return template.format(site=self.site, **fill)

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
        parse_faults(raw["faults"], str(path))  # the fault parser's own message, naming this file
    try:
        return LabConfig.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise InputError(
            f"`{where}`: {first['msg']}",
            place=str(path),
            fix="see harness/lab/config.py for the fields",
        ) from None
