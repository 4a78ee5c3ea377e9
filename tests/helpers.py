"""Helpers for vtlab's own tests: scenario files written into a temporary suite, and `vtlab`
runs in a subprocess exactly as a user starts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAB = ROOT / "fixtures" / "labs" / "embedded.yaml"
CONTRACT = ROOT / "fixtures" / "contract" / "trygghetsalarm.yaml"
VTLAB = Path(sys.executable).with_name("vtlab")


@dataclass
class VtlabResult:
    rc: int
    stdout: str
    stderr: str
    report_dir: Path
    run_id: str

    @property
    def run_dir(self) -> Path:
        return self.report_dir / self.run_id

    @property
    def summary(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.run_dir / "summary.json").read_text(encoding="utf-8"))
        return data

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


_RELAXED: list[Path] = []


def partial_suite_contract() -> Path:
    """The example contract with `require_tested: []`, for tests that run one scenario of the suite and
    judge it alone (the default rule keeps such a run incomplete; tests of that rule use CONTRACT)."""
    if not _RELAXED:
        import tempfile

        text = CONTRACT.read_text(encoding="utf-8").replace("require_tested: [må]", "require_tested: []")
        assert "require_tested: []" in text
        path = Path(tempfile.mkdtemp(prefix="vtlab-tests-")) / "contract-partial-suite.yaml"
        path.write_text(text, encoding="utf-8")
        _RELAXED.append(path)
    return _RELAXED[0]


def run_vtlab(
    *args: str,
    report_dir: Path,
    run_id: str = "test-run",
    cwd: Path = ROOT,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    contract: Path | None = None,
) -> VtlabResult:
    """`vtlab run ...` as a user types it, in a subprocess. Without `contract`, a single scenario is judged
    alone (partial_suite_contract); pass `contract=CONTRACT` for the example contract's own rule."""
    chosen = contract or (None if "--contract" in args else partial_suite_contract())
    extra = ["--contract", str(chosen)] if chosen else []
    cmd = [str(VTLAB), "run", "--report-dir", str(report_dir), "--run-id", run_id, *extra, *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout, env={**os.environ, **(env or {})}, check=False
    )
    result = VtlabResult(proc.returncode, proc.stdout, proc.stderr, report_dir, run_id)
    assert_one_verdict(result)
    return result


def assert_one_verdict(result: VtlabResult) -> None:
    """Every run in vtlab's own tests checks that the exit code, summary.json, the terminal and the
    rendered report tell the same verdict (one approval rule)."""
    if result.rc == 2 or not (result.run_dir / "summary.json").exists():
        return
    verdict = result.summary["verdict"]
    assert result.rc == (0 if verdict == "approved" else 1), (result.rc, verdict)
    assert f"vtlab: {verdict} (" in result.stdout, result.stdout[-2000:]
    html = result.run_dir / "report.html"
    if html.exists():
        from harness.report.i18n import Lang

        assert Lang("nb").t(verdict) in html.read_text(encoding="utf-8"), f"report.html does not say {verdict}"


def memory_lab(folder: Path, *, kind: str = "external") -> Path:
    """The example lab file with every device and probe on the in-memory transport (`via: memory`): the
    real session, engine and tracker run against whatever a test puts on the bus as the platform."""
    import yaml

    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["platform"] = {"kind": kind}
    data["mqtt"] = {"url": "mqtt://127.0.0.1:1", "version": "5"}
    data["users"] = str(LAB.parent.parent / "users" / "personas.yaml")
    for section in ("devices", "probes"):
        for entry in data[section].values():
            entry["via"] = "memory"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "memory-lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(binary: str, port: int, folder: Path, extra: str = "") -> subprocess.Popen[bytes]:
    """A plain mosquitto of the test's own on `port` (no persistence: a restart forgets every session),
    returned once it accepts connections; the same port can be used again after killing it."""
    import socket
    import time

    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n{extra}")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("mosquitto did not start")


class Suite:
    """A temporary acceptance suite: scenario files under `<tmp>/scenarios/`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / "scenarios"
        self.dir.mkdir(parents=True, exist_ok=True)

    def scenario(self, name: str, text: str) -> Path:
        path = self.dir / f"{name}.yaml"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def file(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path


BUTTON_PRESSES = """
    title: Knappetrykk {repeat} ganger
    covers: [TA-1.1, TA-1.4, TA-1.5, TA-1.6]
    user: persona/ragnhild-87
    devices:
      knapp: {{model: safety_alarm}}
    repeat: {repeat}
    pace: {pace}
    drain: 1s
    steps:
      - trigger: {{device: knapp, event: button_press}}
      - expect_alarm: {{from: knapp, within: {within}}}
    criteria:
      - {{metric: alarm_latency, p99: "<= 30s", requirement: TA-1.1}}
      - {{metric: lost, count: "== 0", requirement: TA-1.4}}
      - {{metric: duplicates, count: "== 0", requirement: TA-1.5}}
      - {{metric: out_of_order, count: "== 0", requirement: TA-1.6}}
"""


def button_presses(repeat: int = 100, pace: str = "50/s", within: str = "1s") -> str:
    return BUTTON_PRESSES.format(repeat=repeat, pace=pace, within=within)


def load_scenario_with(path: Path, folder: Path, **load: object) -> Path:
    """A copy of a load scenario file with some of its `load:` settings changed (e.g. a short `within`, so
    a run with dropped alarms judges them lost after seconds instead of the contract's limit)."""
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["load"].update(load)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / path.name
    out.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return out
