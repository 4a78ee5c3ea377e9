"""The target a run tests: the embedded reference lab (a process vtlab starts, with its own broker and
throw-away PKI) or a supplier's platform described by the lab file. Both give the test bed the MQTT
settings of each identity; only the embedded lab can inject faults and report what it did."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Protocol

from harness.errors import InputError
from harness.faults import parse_faults
from harness.labfile import Lab
from harness.transports.mqtt import MqttSettings
from harness.units import parse_duration


def run_faults(lab: Lab, override: str | None) -> str:
    """The canonical fault spec for the run: `--fault` over the lab file's; refused for external targets."""
    if override is not None:
        if lab.spec.platform.kind != "embedded":
            raise InputError(
                "faults can only be injected into the embedded reference lab",
                place="--fault",
                fix="drop --fault, or run against a lab file with `platform: {kind: embedded}`",
            )
        return str(parse_faults(override, "--fault"))
    text = lab.spec.platform.faults
    return str(parse_faults(text, lab.src.place("platform", "faults"))) if text else ""


class Target(Protocol):
    kind: str
    faults: str

    def start(self, run_dir: Path, listeners: dict[str, Any] | None = None) -> None:
        """Start (or reach) the target; `listeners` says where vtlab's listening probes are (centres on
        DC-09/SCAIP, patient-record probes), for a target vtlab configures (the embedded lab)."""
        ...

    def client_settings(self, identity: str) -> MqttSettings: ...

    def info(self) -> dict[str, Any]: ...

    def failure(self) -> str | None:
        """Why the target (when it is vtlab's own) stopped working, or None."""
        ...

    def new_events(self) -> list[dict[str, Any]]:
        """What the target says it did since the last call (the reference lab's fault ledger)."""
        ...

    def endpoint(self, role: str, name: str) -> Any:
        """Where device `name` sends (role `device`) or centre `name` listens (role `centre`), for protocols
        that connect to addresses (DC-09, SCAIP); None when the lab file's entry says it all."""
        ...

    def stop(self) -> None: ...


def _lab_file_settings(lab: Lab, url: str, version: str) -> MqttSettings:
    m = lab.spec.mqtt
    tls = m.tls
    return MqttSettings(
        url=url,
        version=version,
        ca=lab.resolve(tls.ca) if tls and tls.ca else None,
        cert=lab.resolve(tls.cert) if tls and tls.cert else None,
        key=lab.resolve(tls.key) if tls and tls.key else None,
        key_password=os.environ.get(tls.key_password_env) if tls and tls.key_password_env else None,
        verify=tls.verify if tls else True,
        username=m.username,
        password=os.environ.get(m.password_env) if m.password_env else None,
        connect_timeout_s=parse_duration(m.connect_timeout) / 1e9,
    )


class ExternalTarget:
    """A supplier's platform: vtlab connects where the lab file says, with the lab file's credentials."""

    kind = "external"
    faults = ""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self._settings = _lab_file_settings(lab, lab.spec.mqtt.url, lab.spec.mqtt.version)

    def start(self, run_dir: Path, listeners: dict[str, Any] | None = None) -> None:
        return None

    def client_settings(self, identity: str) -> MqttSettings:
        return self._settings

    def info(self) -> dict[str, Any]:
        return {"broker": self._settings.url, "broker_kind": "external", "mqtt_version": self._settings.version}

    def failure(self) -> str | None:
        return None

    def new_events(self) -> list[dict[str, Any]]:
        return []

    def endpoint(self, role: str, name: str) -> Any:
        return None

    def stop(self) -> None:
        return None


class EmbeddedTarget:
    """vtlab's reference lab, started as a process with its own broker; its certificates are thrown
    away when the run ends."""

    kind = "embedded"

    def __init__(self, lab: Lab, faults: str) -> None:
        self.lab = lab
        self.faults = faults
        self._process: Any = None
        self._embedded: Any = None
        self._ledger_offset = 0
        self._base: MqttSettings | None = None

    def start(self, run_dir: Path, listeners: dict[str, Any] | None = None) -> None:
        from harness.lab.process import LabProcess
        from harness.reference_lab import embedded_target

        self._embedded = embedded_target(self.lab, self.faults, listeners=listeners or {})
        try:
            self._process = LabProcess(self._embedded.config, run_dir / "lab")
            self._process.start()
        except BaseException:
            self._embedded.cleanup()
            raise
        self._base = _lab_file_settings(self.lab, self._process.broker_url, self._process.mqtt_version)

    def client_settings(self, identity: str) -> MqttSettings:
        assert self._base is not None, "start() first"
        settings: MqttSettings = self._embedded.client_settings(identity, self._base)
        return settings

    @property
    def process(self) -> Any:
        return self._process

    def info(self) -> dict[str, Any]:
        if self._process is None:
            return {"broker_kind": "embedded (not started)"}
        return {"broker": self._process.broker_url, "broker_kind": self._process.broker_kind,
                "mqtt_version": self._base.version if self._base else None,
                "access_control": getattr(self._process, "access_control", None),
                "protections_off": sorted(getattr(self._embedded, "insecure", ()) or ()),
                "lab_clock": getattr(self._embedded, "clock", None)}

    def failure(self) -> str | None:
        if self._process is not None and not self._process.alive:
            return "the reference lab process stopped: " + self._process.stderr_tail(5).replace("\n", " | ")
        return None

    def new_events(self) -> list[dict[str, Any]]:
        if self._process is None:
            return []
        try:
            with self._process.ledger_path.open("rb") as f:
                f.seek(self._ledger_offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self._ledger_offset += len(complete)
        out = []
        for line in complete.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("action") != "routed":
                    out.append(entry)
        return out

    def endpoint(self, role: str, name: str) -> Any:
        ports = getattr(self._process, "ingress", None) or {}
        return ports.get(name) if role == "device" else None

    def stop(self) -> None:
        if self._process is not None:
            with contextlib.suppress(Exception):
                self._process.stop()
        if self._embedded is not None:
            self._embedded.cleanup()  # throw-away keys, never evidence


def make_target(lab: Lab, faults: str | None) -> Target:
    spec = run_faults(lab, faults)
    if lab.spec.platform.kind == "embedded":
        return EmbeddedTarget(lab, spec)
    return ExternalTarget(lab)
