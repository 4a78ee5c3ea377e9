"""The test bed: the connected devices and response-centre probes scenarios run against, each on the
transport its lab-file entry names, each with its own identity. It also keeps the harness-fault log:
a connection of vtlab's own that dropped, a heartbeat it could not send, a lab that died. What
vtlab could not do while such a fault lasted is never charged to the supplier."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from devices.simulated import SimulatedDevice
from harness.clock import now_ns
from harness.evidence import EvidenceStore
from harness.labfile import Lab
from harness.links import CentreLink, DeviceLink
from harness.probes.patient_record import PatientRecordProbe
from harness.probes.response_centre import ResponseCentreProbe
from harness.run.target import Target
from harness.tracking import Tracker
from harness.transports.loop import LoopThread
from harness.transports.memory import MemoryBus
from harness.transports.mqtt import MqttSettings
from harness.transports.registry import transport_kinds

LISTENING = ("dc09", "scaip")
GATEWAY_DEVICES = ("serial", "ble")
"""Devices a home gateway connects to (a pty, a BLE peripheral): they exist before the target starts."""
"""Centre transports where vtlab listens and the platform connects: bound before the target starts."""


@dataclass(frozen=True, slots=True)
class HarnessFault:
    t_ns: int
    scenario: str | None
    text: str


class TestBed:
    """Implements the scenario runner's Testbed."""

    __test__ = False

    def __init__(self, lab: Lab, evidence: EvidenceStore, target: Target, run_nonce: str) -> None:
        self.lab = lab
        self.evidence = evidence
        self.target = target
        self.run_nonce = run_nonce
        self.tracker = Tracker(evidence)
        self.probes: dict[str, ResponseCentreProbe] = {}
        self._devices: dict[str, SimulatedDevice] = {}
        self._seq: dict[str, int] = {}
        self._links: list[DeviceLink | CentreLink] = []
        self._centre_links: dict[str, CentreLink] = {}
        self.records: dict[str, PatientRecordProbe] = {}
        self._io: LoopThread | None = None
        self._bus: MemoryBus | None = None
        self._faults: list[HarnessFault] = []
        self._lock = threading.Lock()
        self.progress_sink: Callable[[str], None] | None = None  # the terminal, set by the pytest plugin

    # --- TransportContext -----------------------------------------------------------------------
    def mqtt_settings(self, identity: str = "harness") -> MqttSettings:
        return self.target.client_settings(identity)

    def memory_bus(self) -> MemoryBus:
        if self._bus is None:
            self._bus = MemoryBus()
        return self._bus

    def on_transport_state(self, state: str, detail: str) -> None:
        if state in ("lost", "refused"):
            self.harness_fault(detail)
        else:
            self.evidence.observation(self.tracker.scenario, "harness", detail)

    def progress(self, text: str) -> None:
        sink = self.progress_sink
        if sink is not None:
            try:
                sink(text)
            except Exception:  # a broken terminal must not stop a run
                self.progress_sink = None

    # --- harness faults -------------------------------------------------------------------------
    def harness_fault(self, text: str) -> None:
        fault = HarnessFault(now_ns(), self.tracker.scenario, text)
        with self._lock:
            self._faults.append(fault)
        self.evidence.harness_fault(fault.scenario, text)

    def faults_since(self, t_ns: int) -> list[HarnessFault]:
        """Harness faults at or after `t_ns`, including a target that stopped and evidence not written."""
        failure = self.target.failure()
        if failure is not None and not any(f.text == failure for f in self._faults):
            self.harness_fault(failure)
        if self.evidence.write_errors:
            errors, self.evidence.write_errors[:] = list(self.evidence.write_errors), []
            self.harness_fault(f"{len(errors)} evidence row(s) could not be written: {errors[0]}")
        with self._lock:
            return [f for f in self._faults if f.t_ns >= t_ns]

    # --- connections ----------------------------------------------------------------------------
    def endpoint(self, role: str, name: str) -> Any:
        return self.target.endpoint(role, name)

    def io(self) -> LoopThread:
        if self._io is None:
            self._io = LoopThread("vtlab-links")
        return self._io

    def prepare(self) -> dict[str, Any]:
        """Open what listens before the target starts (patient-record probes; centres on DC-09 and SCAIP)
        and return where each listens, for the target's configuration."""
        listeners: dict[str, Any] = {"centres": {}, "records": {}}
        if self.target.kind == "embedded":  # the reference lab's gateway must find them when it starts
            for device_id, spec in self.lab.spec.devices.items():
                if spec.via in GATEWAY_DEVICES:
                    self.device(device_id)
        for name, probe in self.lab.spec.probes.items():
            if probe.kind == "epj":
                rec = PatientRecordProbe(name, probe.epj, self.lab.path.parent, self.tracker,
                                         pull_api=self.lab.pull_api(name), on_fault=self.harness_fault)
                rec.start()
                self.records[name] = rec
                listeners["records"][name] = rec
                continue
            if probe.via in LISTENING:
                link = transport_kinds()[probe.via].centre(self, name)
                self._links.append(link)
                self._centre_links[name] = link
                listeners["centres"][probe.centre] = {"via": probe.via, "address": link.bind()}  # type: ignore[attr-defined]
        return listeners

    def start(self) -> None:
        for name, probe in self.lab.spec.probes.items():
            if probe.kind == "epj":
                continue
            link = self._centre_links.get(name)
            if link is None:
                link = transport_kinds()[probe.via].centre(self, name)
                self._links.append(link)
            p = ResponseCentreProbe(name, str(probe.centre), link, self.tracker)
            p.start()
            self.probes[name] = p

    def device(self, device_id: str) -> SimulatedDevice:
        if device_id not in self._devices:
            from harness.plugins import device_models

            spec = self.lab.spec.devices[device_id]
            link = transport_kinds()[spec.via].device(self, device_id)
            self._links.append(link)
            dev = SimulatedDevice(device_id, device_models()[spec.model], spec.user, link,
                                  on_fault=self.harness_fault)
            probe = f"device:{device_id}"
            dev.listen_for_acks(lambda got: self.tracker.on_incoming(probe, "device_ack", got),
                                lambda bad: self.tracker.on_refused(probe, bad))
            on_event = getattr(link, "on_event", None)  # a real device vtlab observes reports its own events
            if on_event is not None:
                on_event(lambda got: self.tracker.on_incoming(probe, "device_event", got),
                         lambda bad: self.tracker.on_refused(probe, bad))
            self._devices[device_id] = dev
        return self._devices[device_id]

    def next_seq(self, device_id: str) -> int:
        self._seq[device_id] = self._seq.get(device_id, 0) + 1
        return self._seq[device_id]

    def stop_devices(self) -> None:
        for dev in self._devices.values():
            dev.stop_heartbeat()

    def collect_target_events(self, scenario: str | None) -> int:
        """Copy what the target says it did since the last call into the evidence store."""
        events = self.target.new_events()
        for entry in events:
            self.evidence.lab_event(scenario, entry)
        return len(events)

    def close(self) -> None:
        self.stop_devices()
        for link in self._links:
            with contextlib.suppress(Exception):
                link.close()
        for rec in self.records.values():
            with contextlib.suppress(Exception):
                rec.close()
        if self._io is not None:
            self._io.close()
