"""`vtlab load --ui`: locust's own web UI on 127.0.0.1 while the run goes on, as IT staff open it in a
browser; the run still starts and stops by itself at its schedule and is judged as a headless one."""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import VTLAB, partial_suite_contract
from tests.integration.test_load_runs import CRITERIA, need_mosquitto, scenario

pytestmark = pytest.mark.slow


def test_the_web_ui_answers_while_the_run_goes_on_and_the_run_ends_by_itself(tmp_path: Path) -> None:
    need_mosquitto()
    path = scenario(tmp_path, "{shape: steady, devices: 10, rate: 10/s, duration: 8s, heartbeat: 2s, drain: 2s}",
                    CRITERIA)
    proc = subprocess.Popen([str(VTLAB), "load", str(path), "--ui", "--report-dir", str(tmp_path / "reports"),
                             "--contract", str(partial_suite_contract())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    page = ""
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            found = re.search(r"locust web UI at (http://127\.0\.0\.1:\d+)", line)
            url = found.group(1) if found else None
        assert url is not None, "".join(seen)[-3000:]
        for _ in range(50):  # the UI comes up a moment after the line
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    assert answer.status == 200
                    page = answer.read().decode("utf-8", "replace")
                break
            except OSError:
                time.sleep(0.2)
        rest, _ = proc.communicate(timeout=180)
        seen.append(rest)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "locust" in page.lower(), page[:500]
    assert proc.returncode == 0, "".join(seen)[-3000:]
    (run_dir,) = [p for p in (tmp_path / "reports").iterdir() if p.is_dir() and not p.is_symlink()]
    summary = json.loads((run_dir / "summary.json").read_text())
    (sc,) = summary["scenarios"]
    assert {c["metric"]: c["verdict"] for c in sc["criteria"]}["lost"] == "pass"
    assert sc["metrics"]["stimuli"] == 80
