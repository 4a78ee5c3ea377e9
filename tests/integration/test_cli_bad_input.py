"""`vtlab run` on bad input: one clear message naming the place and the fix, no traceback, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.helpers import Suite, button_presses, memory_lab, partial_suite_contract, run_vtlab


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
    lab = memory_lab(suite.root / "lab", kind="external")
    text = lab.read_text(encoding="utf-8").replace("via: memory", "via: mqtt")
    lab.write_text(text.replace("mqtt://127.0.0.1:1", f"mqtt://127.0.0.1:{port}"), encoding="utf-8")
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--lab", str(lab), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, f"mqtt://127.0.0.1:{port}", "cannot reach the MQTT broker")


def test_faults_are_refused_for_a_supplier_platform(suite: Suite, tmp_path: Path) -> None:
    lab = memory_lab(suite.root / "lab", kind="external")
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--lab", str(lab), "--fault", "drop=0.1", report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "only be injected into the embedded reference lab")


def test_missing_lab_file_exits_2(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), "--lab", str(tmp_path / "nope.yaml"), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "lab file not found")


def test_vtlab_options_after_the_scenario_path_are_vtlabs_not_pytests(suite: Suite, tmp_path: Path) -> None:
    import subprocess

    from tests.helpers import VTLAB

    path = suite.scenario("s", button_presses(repeat=2))
    proc = subprocess.run([str(VTLAB), "run", str(path), "--run-id", "after-path", "--report-dir",
                           str(tmp_path / "here"), "--contract", str(partial_suite_contract())],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (tmp_path / "here" / "after-path" / "summary.json").exists()


def test_an_existing_alluredir_is_not_taken_for_a_scenario_folder(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=2))
    results = tmp_path / "allure-results"
    for run_id in ("first", "second"):  # the folder exists on the second run
        result = run_vtlab(str(path), "--alluredir", str(results), report_dir=tmp_path / "r", run_id=run_id)
        assert result.rc == 0, result.output[-3000:]
    assert results.is_dir()


def test_the_readme_allure_command_works_twice_in_a_row_from_the_default_suite_folder(tmp_path: Path) -> None:
    """`vtlab run --alluredir allure-results` as the README writes it, run twice: the second run used to
    exit 2 because the existing folder was taken for a scenario folder."""
    import os
    import subprocess

    from tests.helpers import ROOT, VTLAB

    for run_id in ("one", "two"):
        proc = subprocess.run([str(VTLAB), "run", "--alluredir", "allure-results", "--report-dir", str(tmp_path),
                               "--run-id", run_id, str(ROOT / "scenarios" / "alarm" / "fall.yaml")],
                              capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False,
                              env={**os.environ})
        assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
        assert (tmp_path / run_id / "summary.json").exists()


import pytest  # noqa: E402


@pytest.mark.parametrize("run_id", ["../escape", "/tmp/abs", "a#b", "a/b", "..", ".hidden", "x" * 100, "a b"])
def test_a_run_id_that_is_not_a_plain_folder_name_is_refused(suite: Suite, tmp_path: Path, run_id: str) -> None:
    path = suite.scenario("s", button_presses(repeat=1))
    result = run_vtlab(str(path), report_dir=tmp_path / "r", run_id=run_id)
    assert_clean_refusal(result.output, result.rc, "--run-id", "plain folder name")
    assert not (tmp_path / "escape").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["r"], ["scenarios"], ["r", "scenarios"])


def test_a_report_dir_that_is_a_file_is_refused(suite: Suite, tmp_path: Path) -> None:
    path = suite.scenario("s", button_presses(repeat=1))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run_vtlab(str(path), report_dir=blocker)
    assert_clean_refusal(result.output, result.rc, "--report-dir", "is a file")


def test_two_scenarios_with_one_title_are_refused(suite: Suite, tmp_path: Path) -> None:
    suite.scenario("a", button_presses(repeat=1))
    suite.scenario("b", button_presses(repeat=1))
    result = run_vtlab(str(suite.dir), report_dir=tmp_path / "r")
    assert_clean_refusal(result.output, result.rc, "already used by", "own title")
