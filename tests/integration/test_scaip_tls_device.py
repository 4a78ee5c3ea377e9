"""A SCAIP alarm that speaks SIP over TLS, as the lab file says (`scaip: {transport: tls}`): the device
checks the platform's certificate against the lab's CA and shows its own, and the alarm reaches the DC-09
centre exactly as over UDP."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers import LAB, ROOT, run_vtlab

pytestmark = pytest.mark.slow


def tls_lab(folder: Path) -> Path:
    data = yaml.safe_load(LAB.read_text(encoding="utf-8"))
    data["users"] = str(LAB.parent.parent / "users" / "personas.yaml")
    for device in ("sa-ingrid", "fd-per"):  # every SCAIP identity on TLS: the lab then has no plain SIP port
        data["devices"][device]["scaip"]["transport"] = "tls"
    path = folder / "scaip-tls-lab.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def test_a_scaip_alarm_over_sip_tls_reaches_the_dc09_centre(tmp_path: Path) -> None:
    result = run_vtlab(str(ROOT / "scenarios" / "protocols" / "scaip_til_dc09.yaml"), "--lab", str(tls_lab(tmp_path)),
                       report_dir=tmp_path / "reports")
    assert result.rc == 0, result.output[-3000:]
    ledger = [json.loads(x) for x in (result.run_dir / "lab" / "ledger.jsonl").read_text().splitlines() if x]
    received = [x for x in ledger if x.get("action") == "routed" and x.get("device") == "sa-ingrid"]
    assert len(received) == 30
    ingress = json.loads((result.run_dir / "lab" / "lab.json").read_text(encoding="utf-8"))["ingress"]
    assert ingress["scaip_tls"] and not ingress["scaip_plain"]  # nothing but SIP over TLS was open to arrive on
