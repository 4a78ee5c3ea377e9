"""The pull pattern end to end: TA-6.1's scenario (scenarios/integration/journal.yaml) unchanged, with the
lab file's patient-record probe in `mode: pull` (fixtures/labs/embedded-epj-pull.yaml). The reference lab
pushes nothing; it keeps its records in its own FHIR API, and the probe finds them by search with a token
from the lab's HelseID-shaped endpoint. `expect_record` judges them exactly as pushed ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import InputError
from harness.labfile import load_lab
from tests.helpers import ROOT, run_vtlab

pytestmark = pytest.mark.slow

PULL_LAB = ROOT / "fixtures" / "labs" / "embedded-epj-pull.yaml"


def test_journal_scenario_passes_with_the_record_pulled_from_the_lab_api(tmp_path: Path) -> None:
    result = run_vtlab(str(ROOT / "scenarios" / "integration" / "journal.yaml"), "--lab", str(PULL_LAB),
                       report_dir=tmp_path / "r")
    assert result.rc == 0, result.output[-3000:]
    (scenario,) = result.summary["scenarios"]
    epj = scenario["metrics"]["latency"]["epj_latency"]
    assert epj["n"] == 10 and epj["arrived"] == 10, epj  # 5 handled alarms + 5 low-battery alerts
    ledger = (result.run_dir / "lab" / "ledger.jsonl").read_text()
    assert '"epj_recorded"' in ledger and '"epj_push"' not in ledger  # read by search, never pushed
    assert '"fhir_refused"' not in ledger  # every search carried a valid token


def _write(tmp_path: Path, epj: dict[str, object], platform: dict[str, object] | None = None) -> Path:
    data = yaml.safe_load(PULL_LAB.read_text(encoding="utf-8"))
    data["users"] = str(ROOT / "fixtures" / "users" / "personas.yaml")
    data["probes"]["journal"]["epj"] = {**data["probes"]["journal"]["epj"], **epj}
    if platform is not None:
        data["platform"] = platform
        data["mqtt"] = {"url": "mqtts://broker.example:8883"}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_a_pulling_probe_of_a_supplier_platform_must_name_its_api_and_client(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="names no FHIR API") as exc:
        load_lab(_write(tmp_path, {}, {"kind": "external"}))
    assert "lab.yaml:" in str(exc.value.place) and "api:" in str(exc.value.fix)
    with pytest.raises(InputError, match="no client to get a token"):
        load_lab(_write(tmp_path, {"api": "https://platform.example/fhir/999888777"}, {"kind": "external"}))
    with pytest.raises(InputError, match=r"key_file `nope\.pem`"):
        load_lab(_write(tmp_path, {"api": "https://platform.example/fhir/999888777", "client_id": "vtlab",
                                   "key_file": "nope.pem"}, {"kind": "external"}))
    with pytest.raises(InputError, match=r"outside 100ms\.\.10m"):
        load_lab(_write(tmp_path, {"interval": "20m"}))
    with pytest.raises(InputError, match="not an HTTP"):
        load_lab(_write(tmp_path, {"api": "ftp://x/fhir"}))
