"""Helpers for the device tests (BLE and serial): the device plugins registered with vtlab's plugin manager
(until harness.plugins registers them itself), a memory lab with extra devices, and a session run against a
MOCK platform that forwards what a gateway read from the devices to the response-centre topics."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from devices import catalog
from harness.contract import load_contract
from harness.engine import run_and_judge
from harness.evidence import EvidenceReader
from harness.labfile import Lab, load_lab
from harness.links import device_transports
from harness.links.gateway import GatewayEvent, forwarded_alarm
from harness.metrics import ScenarioMetrics, compute
from harness.plugins import plugin_manager
from harness.scenario import device_steps
from harness.scenario.loader import load_scenario
from harness.session import RunSession
from tests.helpers import CONTRACT, ROOT, Suite

PLUGINS = (
    (catalog, "vtlab.device_catalog"),
    (device_transports, "vtlab.device_links"),
    (device_steps, "vtlab.device_steps"),
)


def _clear_caches() -> None:
    from harness.scenario.registry import device_models, step_kinds
    from harness.transports.registry import transport_kinds

    for cached in (device_models, step_kinds, transport_kinds):
        cached.cache_clear()


@contextmanager
def device_plugins() -> Iterator[None]:
    """The catalog, the device transports and the device steps, registered for the duration."""
    pm = plugin_manager()
    added = [m for m, name in PLUGINS if not pm.is_registered(m) and pm.get_plugin(name) is None]
    for module in added:
        pm.register(module, name=dict((m.__name__, n) for m, n in PLUGINS)[module.__name__])
    _clear_caches()
    try:
        yield
    finally:
        for module in added:
            pm.unregister(module)
        _clear_caches()


DEVICE_LAB = ROOT / "fixtures" / "labs" / "devices-memory.yaml"


def device_lab(folder: Path, devices: dict[str, dict[str, Any]] | None = None) -> Lab:
    """fixtures/labs/devices-memory.yaml (with `devices` added), copied into `folder`."""
    data = yaml.safe_load(DEVICE_LAB.read_text(encoding="utf-8"))
    data["users"] = str(DEVICE_LAB.parent / data["users"])
    data["devices"].update(devices or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "device-lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return load_lab(path)


class MockPlatform:
    """MOCK alarm platform: every event a gateway hands it goes to the response centre of the device's user,
    under an id of the platform's own (as a real platform does); `alter` may change it on the way."""

    def __init__(
        self, session: RunSession, lab: Lab, alter: Callable[[GatewayEvent], GatewayEvent | None] | None = None
    ) -> None:
        self.bus = session.bed.memory_bus()
        self.lab = lab
        self.alter = alter
        self.events: list[GatewayEvent] = []
        self.findings: list[Any] = []
        self._ids = itertools.count(1)

    def take(self, event: GatewayEvent) -> None:
        self.events.append(event)
        if self.alter is not None:
            changed = self.alter(event)
            if changed is None:
                return
            event = changed
        user = self.lab.spec.devices[event.device].user
        centre = self.lab.personas[user].centre
        body = forwarded_alarm(
            platform_id=f"plat-{next(self._ids)}",
            device=event.device,
            user=user,
            centre=centre,
            event=event.event,
            code=event.code,
            zone=event.zone,
            qualifier=event.qualifier,
            priority=event.priority,
            readings=event.readings,
            measured=event.measured,
            battery=event.battery,
        )
        self.bus.deliver(self.lab.topic("centre_alarm", centre=centre), body)

    def finding(self, refused: Any) -> None:
        self.findings.append(refused)


def run_scenario(
    suite: Suite, tmp_path: Path, lab: Lab, text: str, platform: Callable[[RunSession], Any]
) -> tuple[ScenarioMetrics, Path]:
    """The real session and engine; `platform(session)` starts the MOCK platform (and its gateway) and returns
    something with `close()`."""
    contract, src = load_contract(CONTRACT)
    plan = load_scenario(suite.scenario("s", text), contract, lab, "s")
    session = RunSession(lab=lab, contract=contract, contract_src=src, report_dir=tmp_path / "reports", run_id="dev")
    session.start()
    mock = platform(session)
    try:
        run_and_judge(plan, session)
    finally:
        mock.close()
        session.close()
    reader = EvidenceReader(session.run_dir)
    try:
        return compute(reader.stimuli("s"), reader.arrivals("s"), reader.matches("s")), session.run_dir
    finally:
        reader.close()


def observations(run_dir: Path) -> list[dict[str, Any]]:
    reader = EvidenceReader(run_dir)
    try:
        return [dict(row) for row in reader.observations()]
    finally:
        reader.close()


def matches(run_dir: Path, scenario: str = "s") -> list[dict[str, Any]]:
    reader = EvidenceReader(run_dir)
    try:
        return [dict(row) for row in reader.matches(scenario)]
    finally:
        reader.close()
