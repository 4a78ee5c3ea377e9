"""Every security scenario of the example suite has a twin run against the reference lab's `insecure`
profile: it passes on the secure lab (the README's run) and must FAIL here, for the right reason (the
platform accepted what it must refuse), or the check proves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import LAB, ROOT, run_vtlab

pytestmark = pytest.mark.slow


def insecure_lab(folder: Path, off: list[str] | None = None) -> Path:
    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["platform"] = {**data["platform"], "profile": "insecure", **({"insecure": off} if off else {})}
    data["users"] = str(LAB.parent.parent / "users" / "personas.yaml")
    path = folder / "insecure.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("scenario,requirement", [
    ("tls_og_sertifikater.yaml", "TA-5.1"),
    ("tls_versjon_og_chiffer.yaml", "TA-5.1"),
    ("tilgangskontroll.yaml", "TA-5.2"),
    ("journal_api_uten_token.yaml", "TA-5.2"),
])
def test_a_security_scenario_fails_on_the_insecure_lab_because_the_platform_accepted(
        tmp_path: Path, scenario: str, requirement: str) -> None:
    result = run_vtlab(str(ROOT / "scenarios" / "security" / scenario), "--lab", str(insecure_lab(tmp_path)),
                       report_dir=tmp_path / "r")
    assert result.rc == 1, result.output[-3000:]
    summary = result.summary
    assert summary["verdict"] == "not_approved", summary["reason"]
    accepted = [d for d in summary["deviations"] if d["evidence"]["metric"] == "insecure_accepted"]
    assert accepted and all(d["requirement"] == requirement for d in accepted), summary["deviations"]
    assert not summary.get("harness_faults"), summary["harness_faults"]


def test_the_lab_fhir_api_without_its_token_check_lets_anyone_read_and_the_scenario_says_so(tmp_path: Path) -> None:
    """Only `fhir_token` off: the lab's own FHIR API answers a search without a token (200), while a write
    is still refused as the API is read-only (405); the finding names the search."""
    from harness.evidence import EvidenceReader

    result = run_vtlab(str(ROOT / "scenarios" / "security" / "journal_api_uten_token.yaml"),
                       "--lab", str(insecure_lab(tmp_path, ["fhir_token"])), report_dir=tmp_path / "r")
    assert result.rc == 1, result.output[-3000:]
    (deviation,) = result.summary["deviations"]
    assert (deviation["requirement"], deviation["evidence"]["metric"]) == ("TA-5.2", "insecure_accepted")
    reader = EvidenceReader(result.run_dir)
    try:
        (record,) = [json.loads(o["text"]) for o in reader.observations() if o["kind"] == "security"]
    finally:
        reader.close()
    assert record["outcome"] == "accepted" and "search" in record["detail"]
    assert (record["refusal"]["search_status"], record["refusal"]["push_status"]) == (200, 405)
    assert record["request"]["url"].startswith("https://127.0.0.1:") and record["request"]["authorization"] == "none"
