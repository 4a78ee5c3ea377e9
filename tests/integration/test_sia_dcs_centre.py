"""A platform that delivers SIA DC-03 data (SIA-DCS) instead of Contact ID to the alarm receiving centre,
as alarm bridges that map SCAIP to SIA do: the embedded lab sends SIA-DCS to the DC-09 centre, vtlab's
centre reads it back as the Contact ID event it stands for, and the SCAIP alarm and the loss of
supervision scenarios pass as they do with ADM-CID."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import LAB, ROOT, run_vtlab

pytestmark = pytest.mark.slow


def sia_lab(folder: Path) -> Path:
    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["users"] = str(LAB.parent.parent / "users" / "personas.yaml")
    data["probes"]["alarmmottak_dc09"]["dc09"]["format"] = "sia-dcs"
    path = folder / "sia-lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_scaip_alarms_and_supervision_delivered_as_sia_dcs_are_read_and_correlated(tmp_path: Path) -> None:
    scenarios = [str(ROOT / "scenarios" / "protocols" / name)
                 for name in ("scaip_til_dc09.yaml", "scaip_hjerteslag_dc09.yaml")]
    result = run_vtlab(*scenarios, "--lab", str(sia_lab(tmp_path)), report_dir=tmp_path / "reports")
    assert result.rc == 0, result.output[-3000:]
    ledger = [json.loads(x) for x in (result.run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if x]
    sent = [x for x in ledger if "sia_dcs" in json.dumps(x)]
    assert len(sent) >= 31, "the lab did not deliver SIA-DCS"  # 30 alarms and the loss of supervision
    assert not any("adm_cid" in json.dumps(x) for x in ledger if x.get("via") == "dc09")


def test_a_centre_that_requires_encryption_over_udp_gets_aes_frames_from_the_lab(tmp_path: Path) -> None:
    """The centre's key (a file beside the lab file) and its UDP line reach the lab: it encrypts, the
    centre decrypts and ACKs; a centre with a key refuses plaintext, so a lab that did not encrypt fails."""
    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["users"] = str(LAB.parent.parent / "users" / "personas.yaml")
    (tmp_path / "centre.key").write_text("0123456789abcdef\n", encoding="ascii")
    data["probes"]["alarmmottak_dc09"]["dc09"].update(key_file="centre.key", protocol="udp")
    lab = tmp_path / "aes-lab.yaml"
    lab.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    result = run_vtlab(str(ROOT / "scenarios" / "protocols" / "scaip_til_dc09.yaml"), "--lab", str(lab),
                       report_dir=tmp_path / "reports")
    assert result.rc == 0, result.output[-3000:]
    ledger = [json.loads(x) for x in (result.run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if x]
    replies = [x for x in ledger if x.get("action") == "centre_reply" and x.get("centre") == "ams-nord"]
    # the centre holds a key, so it answers plaintext DUH: an ACK is an encrypted frame it could read
    assert len(replies) == 30 and all(x["path"].startswith("udp://") and x["reply"] == "ACK" for x in replies), \
        replies[:2]
