"""The run as pytest sees it: options resolved once, contract and lab loaded once, the session (and
with it the reference lab) started lazily by the first scenario that runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness.contract import Contract, find_contract, load_contract
from harness.labfile import Lab, load_lab
from harness.session import DEFAULT_LAB, ROOT, RunSession
from harness.yamlfile import SourceFile


@dataclass(slots=True)
class VtlabRun:
    config: pytest.Config
    _contract: tuple[Contract, SourceFile] | None = None
    _lab: Lab | None = None
    session: RunSession | None = None
    summary: dict[str, Any] | None = None
    scenario_count: int = 0
    suite: list[dict[str, Any]] = field(default_factory=list)  # every scenario collected, run or not
    titles: dict[str, Path] = field(default_factory=dict)  # scenario title -> file (titles are unique)
    extra: dict[str, Any] = field(default_factory=dict)

    def option(self, name: str) -> Any:
        return self.config.getoption(name)

    def _path(self, value: str | None, default: Path) -> Path:
        if value is None:
            return default
        p = Path(value)
        return p if p.is_absolute() else Path(self.config.invocation_params.dir) / p

    @property
    def contract(self) -> tuple[Contract, SourceFile]:
        if self._contract is None:
            opt = self.option("vtlab_contract")
            path = self._path(opt, find_contract(ROOT)) if opt else find_contract(ROOT)
            self._contract = load_contract(path)
        return self._contract

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            self._lab = load_lab(self._path(self.option("vtlab_lab"), DEFAULT_LAB))
        return self._lab

    @property
    def report_dir(self) -> Path:
        return self._path(self.option("vtlab_report_dir"), Path(self.config.rootpath) / "reports")

    def start(self) -> RunSession:
        """The run session, created and connected on first use."""
        if self.session is None:
            contract, src = self.contract
            self.session = RunSession(
                lab=self.lab, contract=contract, contract_src=src, report_dir=self.report_dir,
                run_id=self.option("vtlab_run_id"), faults=self.option("vtlab_fault"),
                argv=list(self.config.invocation_params.args), suite=self.suite,
            )
        if not self.session.started:
            self.session.start()
        return self.session


run_key = pytest.StashKey[VtlabRun]()
