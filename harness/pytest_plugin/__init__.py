"""vtlab's pytest plugin: collects `scenarios/**/*.yaml`, runs them against the lab, judges them
against the contract and prints the per-requirement table. Registered through the `pytest11` entry
point and loaded by the checkout's root conftest.py."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import pytest

from harness.errors import VtlabError
from harness.options import RUN_OPTIONS
from harness.pytest_plugin.collect import ScenarioFile
from harness.pytest_plugin.run import VtlabRun, run_key
from harness.report.summary import write_summary
from harness.report.table import requirement_table

SCENARIO_DIR_NAME = "scenarios"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vtlab", "vtlab acceptance runs")
    for o in RUN_OPTIONS:
        group.addoption(o.flag, dest=o.dest, metavar=o.metavar, help=o.help)
    group.addoption("--interactive", dest="vtlab_interactive", action="store_true",
                    help="ask the tester at manual steps on this terminal (otherwise they are skipped with the reason)")


def _terminate_like_ctrl_c() -> None:
    """SIGTERM (CI cancel, `timeout`) ends the run as Ctrl-C does: the session closes, the run is marked
    interrupted, summary.json is written and throw-away keys are removed."""
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM kills at once
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[run_key] = VtlabRun(config)
    if config.getoption("vtlab_interactive", False):
        from harness.scenario.device_steps import set_interactive

        set_interactive(True)
    _terminate_like_ctrl_c()
    config.addinivalue_line("markers", "requirement(id): the contract requirement a scenario covers")
    config.addinivalue_line("markers", "hardware: needs a real radio or serial device; skipped unless asked for")
    if config.pluginmanager.hasplugin("allure_pytest") and not config.pluginmanager.hasplugin("vtlab_allure"):
        from harness.report import allure_plugin  # Allure labels and attachments for scenario results

        config.pluginmanager.register(allure_plugin, "vtlab_allure")


def scenario_roots(config: pytest.Config) -> list[Path]:
    """Where scenario files are collected: every folder or file named on the command line (any name),
    and the checkout's own `scenarios/` folder. YAML elsewhere (tests, reports) is not a scenario."""
    here = Path(config.invocation_params.dir)
    roots = [(Path(config.rootpath) / SCENARIO_DIR_NAME).resolve()]
    for arg in config.invocation_params.args:
        text = str(arg)
        if text.startswith("-"):
            continue
        path = Path(text.split("::", 1)[0])
        path = path if path.is_absolute() else here / path
        if path.exists():
            roots.append(path.resolve())
    return roots


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix not in (".yaml", ".yml"):
        return None
    resolved = file_path.resolve()
    if any(resolved == root or resolved.is_relative_to(root) for root in scenario_roots(parent.config)):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


def pytest_itemcollected(item: pytest.Item) -> None:
    """Remember every scenario of the suite, also those -k/-m deselect, so a partial run says so."""
    plan = getattr(item, "plan", None)
    if plan is not None:
        item.config.stash[run_key].suite.append({"id": plan.id, "title": plan.title, "covers": plan.covers})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_hw = config.getoption("-m") and "hardware" in str(config.getoption("-m"))
    for item in items:
        if item.get_closest_marker("hardware") and not run_hw:
            item.add_marker(pytest.mark.skip(reason="needs real hardware; run with -m hardware in a lab that has it"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run: VtlabRun | None = session.config.stash.get(run_key, None)
    if run is None or run.session is None:
        return
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
    run.session.close("interrupted" if interrupted else "completed")
    try:
        run.summary = write_summary(run.session.run_dir)
    except VtlabError as exc:
        run.extra["summary_error"] = str(exc)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run: VtlabRun | None = config.stash.get(run_key, None)
    if run is None or run.session is None:
        return
    tr = terminalreporter
    if run.summary is None:
        tr.write_line(f"vtlab: no summary: {run.extra.get('summary_error')}", red=True)
        return
    tr.section("vtlab acceptance: per requirement")
    for line in requirement_table(run.summary):
        tr.write_line(line)
    verdict = run.summary["verdict"]
    colour = {"approved": {"green": True}, "not_approved": {"red": True}}.get(verdict, {"yellow": True})
    tr.write_line("")
    tr.write_line(f"verdict: {verdict.upper()} - {run.summary['reason']}", bold=True, **colour)
    tr.write_line(f"evidence and summary: {run.session.run_dir}")
