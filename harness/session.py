"""One acceptance run put together: its folder and evidence (`run.folder`), its target (`run.target`)
and its test bed (`run.testbed`). The pytest plugin and `vtlab run` hold one of these; scenarios are
run and judged by `harness.engine`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from harness.contract import Contract
from harness.labfile import Lab
from harness.run.folder import ROOT, RunFolder
from harness.run.target import Target, make_target
from harness.run.testbed import TestBed
from harness.yamlfile import SourceFile

DEFAULT_LAB = ROOT / "fixtures" / "labs" / "embedded.yaml"

__all__ = ["DEFAULT_LAB", "ROOT", "RunSession"]


class RunSession:
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
        self.target: Target = make_target(lab, faults)  # checks --fault before any folder is made
        self.folder = RunFolder(report_dir, run_id)
        self.run_id = self.folder.run_id
        self.run_dir = self.folder.path
        self.evidence = self.folder.evidence
        self.bed = TestBed(lab, self.evidence, self.target, self.folder.nonce)
        self.started = False
        self.scenario_count = 0
        info = {
            "lab": {"name": lab.spec.name, "path": str(lab.path), "kind": lab.spec.platform.kind,
                    "sha256": lab.src.sha256, "file": lab.redacted(),
                    "tls_verify": (lab.spec.mqtt.tls.verify if lab.spec.mqtt.tls else None)},
            "contract": {"id": contract.contract.id, "path": str(contract_src.path), "sha256": contract_src.sha256},
            "faults": self.target.faults,
            **self.folder.provenance(argv),
            "suite": suite or [],
        }
        self.evidence.run_started(self.run_id, info)
        self.folder.record_file("contract", contract_src)
        self.folder.record_file("lab", lab.src)
        self.folder.record_path("users", lab.resolve(lab.spec.users))
        self.folder.link_latest()

    def record_scenario_file(self, src: SourceFile) -> None:
        self.folder.record_file("scenario", src)

    def start(self) -> None:
        """Start the target and connect the probes (once)."""
        if self.started:
            return
        self.started = True
        listeners = self.bed.prepare()
        self.target.start(self.run_dir, listeners)
        self.evidence.run_info_update(target=self.target.info())
        self.bed.start()

    def next_run_tag(self) -> str:
        """Correlation-id prefix of the next scenario: unique across runs (random nonce) and scenarios."""
        self.scenario_count += 1
        return f"{self.folder.nonce}-s{self.scenario_count}"

    @property
    def lab_process(self) -> Any:
        return getattr(self.target, "process", None)

    def close(self, status: str = "completed") -> None:
        self.bed.close()
        with contextlib.suppress(Exception):
            self.bed.collect_target_events(self.bed.tracker.scenario)
        self.target.stop()
        self.evidence.run_ended(status)
        self.evidence.close()
