"""`vtlab run` on bad input: one clear message naming the place and the fix, no traceback, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import LAB, Suite, button_presses, run_vtlab


def assert_clean_refusal(result_output: str, rc: int, *needles: str) -> None:
    assert rc == 2, result_output
    assert "Traceback" not in result_output
    for needle in needles:
        assert needle in result_output, result_output


def test_unknown_step_exits_2_with_the_place(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=1).replace("- trigger:", "- trykk:"))
    result = run_vtlab(str(path), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, f"{path}:10", "unknown step `trykk`", "fix:")


def test_duration_in_words_exits_2(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=1, within="3 sekunder"))
    result = run_vtlab(str(path), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "`3 sekunder` has an unknown unit", "250ms, 30s")


def test_a_fault_spec_without_unit_exits_2(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--fault", "delay=400", report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "--fault", "400ms")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_broker_exits_2_naming_the_url(suite: Suite, tmp_path: Path) -> None:
    port = _closed_port()
    text = LAB.read_text(encoding="utf-8")
    text = text.replace("kind: embedded", "kind: external").replace("mqtts://127.0.0.1:0", f"mqtt://127.0.0.1:{port}")
    text = text.replace("users: ../users/personas.yaml", f"users: {LAB.parent.parent / 'users' / 'personas.yaml'}")
    lab = suite.file("supplier.yaml", text)
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--lab", str(lab), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, f"mqtt://127.0.0.1:{port}", "cannot reach the MQTT broker")


def test_faults_are_refused_for_a_supplier_platform(suite: Suite, tmp_path: Path) -> None:
    text = LAB.read_text(encoding="utf-8").replace("kind: embedded", "kind: external")
    text = text.replace("users: ../users/personas.yaml", f"users: {LAB.parent.parent / 'users' / 'personas.yaml'}")
    lab = suite.file("supplier.yaml", text)
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--lab", str(lab), "--fault", "drop=0.1", report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "only be injected into the embedded reference lab")


def test_missing_lab_file_exits_2(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--lab", str(tmp_path / "nope.yaml"), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "lab file not found")
