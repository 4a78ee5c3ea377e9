"""One acceptance run: its folder and evidence store, the target (the embedded reference lab or a
supplier's platform), and the connected devices and probes that scenarios run against."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devices.simulated import SimulatedDevice
from harness.contract import Contract
from harness.errors import InputError
from harness.evidence import EvidenceStore
from harness.labfile import Lab
from harness.probes.response_centre import ResponseCentreProbe
from harness.tracking import Tracker
from harness.transports.mqtt import MqttSettings, MqttTransport
from harness.units import parse_duration
from harness.yamlfile import SourceFile

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LAB = ROOT / "fixtures" / "labs" / "embedded.yaml"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def git_revision(root: Path = ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except OSError:
        return None
    rev = out.stdout.strip()
    if not rev:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return rev + ("-dirty" if dirty else "")


def vtlab_version() -> str:
    try:
        from importlib.metadata import version

        return version("vtlab")
    except Exception:
        return "0+checkout"


def lab_faults(lab: Lab, override: str | None) -> str:
    """The canonical fault spec for the run: `--fault` over the lab file's; refused for external targets."""
    from harness.lab.faults import parse_faults

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


class RunSession:
    """Implements the scenario runner's Testbed."""

    def __init__(
        self,
        *,
        lab: Lab,
        contract: Contract,
        contract_src: SourceFile,
        report_dir: Path,
        run_id: str | None = None,
        faults: str | None = None,
        argv: list[str] | None = None,
        suite: list[dict[str, Any]] | None = None,
    ) -> None:
        self.lab = lab
        self.contract = contract
        self.contract_src = contract_src
        self.faults = lab_faults(lab, faults)
        self.run_id = run_id or new_run_id()
        self.run_dir = report_dir / self.run_id
        if self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise InputError(f"run folder {self.run_dir} exists already", place="--run-id",
                             fix="a run folder is never overwritten: choose another run id")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.evidence = EvidenceStore.create(self.run_dir)
        self.tracker = Tracker(self.evidence)
        self.probes: dict[str, ResponseCentreProbe] = {}
        self._devices: dict[str, SimulatedDevice] = {}
        self._seq: dict[str, int] = {}
        self._transports: list[MqttTransport] = []
        self._lab_process: Any = None
        self._pki: Any = None  # throw-away certificates of a TLS embedded lab, kept outside the evidence
        self._ledger_offset = 0
        self.broker_url = lab.spec.mqtt.url
        self.broker_kind = "external"
        self.mqtt_version = lab.spec.mqtt.version
        self.started = False
        self.evidence.run_started(self.run_id, {**self._info(argv), "suite": suite or []})
        self._record_file("contract", contract_src)
        self._record_file("lab", lab.src)
        users = lab.resolve(lab.spec.users)
        self.evidence.input_file("users", str(users), hashlib.sha256(users.read_bytes()).hexdigest(),
                                 users.read_text(encoding="utf-8"))
        self._link_latest(report_dir)

    def _info(self, argv: list[str] | None) -> dict[str, Any]:
        return {
            "lab": {"name": self.lab.spec.name, "path": str(self.lab.path), "kind": self.lab.spec.platform.kind,
                    "sha256": self.lab.src.sha256, "file": self.lab.redacted(),
                    "tls_verify": (self.lab.spec.mqtt.tls.verify if self.lab.spec.mqtt.tls else None)},
            "contract": {"id": self.contract.contract.id, "path": str(self.contract_src.path),
                         "sha256": self.contract_src.sha256},
            "faults": self.faults,
            "vtlab_version": vtlab_version(),
            "git_revision": git_revision(),
            "machine": {"hostname": platform.node(), "platform": platform.platform(),
                        "python": sys.version.split()[0], "cpus": os.cpu_count()},
            "clock": {"stimulus_and_arrival": "time.monotonic_ns (CLOCK_MONOTONIC), one process",
                      "resolution_ns": int(time.get_clock_info("monotonic").resolution * 1e9) or 1,
                      "wall": "UTC"},
            "argv": argv or sys.argv,
        }

    def _record_file(self, role: str, src: SourceFile) -> None:
        self.evidence.input_file(role, str(src.path), src.sha256, src.text)

    def record_scenario_file(self, src: SourceFile) -> None:
        self._record_file("scenario", src)

    def _link_latest(self, report_dir: Path) -> None:
        latest = report_dir / "latest"
        tmp = report_dir / f".latest-{self.run_id}"
        try:
            tmp.symlink_to(self.run_id, target_is_directory=True)
            tmp.replace(latest)
        except OSError:  # a file system without symlinks: a text file naming the run
            latest.with_suffix(".txt").write_text(self.run_id + "\n")

    # --- the target ------------------------------------------------------------------------------
    def start(self) -> None:
        if self.started:
            return
        self.started = True
        if self.lab.spec.platform.kind == "embedded":
            self._start_reference_lab()
        self._probe_transport = self._transport("probes")
        for name, probe in self.lab.spec.probes.items():
            p = ResponseCentreProbe(name, probe.centre, self._probe_transport, self.lab.topic, self.tracker)
            p.start()
            self.probes[name] = p
        self.evidence.run_info_update(
            target={"broker": self.broker_url, "broker_kind": self.broker_kind, "mqtt_version": self.mqtt_version}
        )

    def _start_reference_lab(self) -> None:
        from harness.lab.process import LabProcess
        from harness.reference_lab import embedded_target

        target = embedded_target(self.lab, self.faults)
        self._pki = target.pki
        config = target.config
        self._lab_process = LabProcess(config, self.run_dir / "lab")
        self._lab_process.start()
        self.broker_url = self._lab_process.broker_url
        self.broker_kind = self._lab_process.broker_kind
        if self.broker_kind == "amqtt":
            self.mqtt_version = "3.1.1"  # amqtt speaks MQTT 3.1.1 only

    def mqtt_settings(self) -> MqttSettings:
        """How the harness connects to the target's broker (the probes' and devices' credentials)."""
        m = self.lab.spec.mqtt
        tls = m.tls
        if self._pki is not None:
            me = self._pki.clients["harness"]
            return MqttSettings(url=self.broker_url, version=self.mqtt_version, ca=self._pki.ca_cert,
                                cert=me.cert, key=me.key, connect_timeout_s=parse_duration(m.connect_timeout) / 1e9)
        return MqttSettings(
            url=self.broker_url,
            version=self.mqtt_version,
            ca=self.lab.resolve(tls.ca) if tls and tls.ca else None,
            cert=self.lab.resolve(tls.cert) if tls and tls.cert else None,
            key=self.lab.resolve(tls.key) if tls and tls.key else None,
            key_password=os.environ.get(tls.key_password_env) if tls and tls.key_password_env else None,
            verify=tls.verify if tls else True,
            username=m.username,
            password=os.environ.get(m.password_env) if m.password_env else None,
            connect_timeout_s=parse_duration(m.connect_timeout) / 1e9,
        )

    def _transport(self, name: str) -> MqttTransport:
        transport = MqttTransport(self.mqtt_settings(), name)
        transport.connect()
        self._transports.append(transport)
        return transport

    # --- Testbed ---------------------------------------------------------------------------------
    def device(self, device_id: str) -> SimulatedDevice:
        if device_id not in self._devices:
            from harness.scenario.registry import device_models

            spec = self.lab.spec.devices[device_id]
            dev = SimulatedDevice(device_id, device_models()[spec.model], spec.user, self._transport(device_id),
                                  self.lab.topic)
            probe = f"device:{device_id}"
            dev.listen_for_acks(lambda msg: self.tracker.on_message(probe, "device_ack", msg))
            self._devices[device_id] = dev
        return self._devices[device_id]

    def next_seq(self, device_id: str) -> int:
        self._seq[device_id] = self._seq.get(device_id, 0) + 1
        return self._seq[device_id]

    def stop_devices(self) -> None:
        for dev in self._devices.values():
            dev.stop_heartbeat()

    def collect_lab_events(self, scenario: str | None) -> int:
        """Copy what the reference lab says it did since the last call into the evidence store."""
        if self._lab_process is None:
            return 0
        path = self._lab_process.ledger_path
        try:
            with path.open("rb") as f:
                f.seek(self._ledger_offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        complete = data[: data.rfind(b"\n") + 1]
        self._ledger_offset += len(complete)
        n = 0
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("action") != "routed":
                self.evidence.lab_event(scenario, entry)
                n += 1
        return n

    @property
    def lab_process(self) -> Any:
        return self._lab_process

    def close(self, status: str = "completed") -> None:
        self.stop_devices()
        for t in self._transports:
            with contextlib.suppress(Exception):
                t.close()
        if self._lab_process is not None:
            self.collect_lab_events(self.tracker.scenario)
            with contextlib.suppress(Exception):
                self._lab_process.stop()
        if self._pki is not None:
            shutil.rmtree(self._pki.ca_cert.parent, ignore_errors=True)  # throw-away keys, never evidence
        self.evidence.run_ended(status)
        self.evidence.close()

