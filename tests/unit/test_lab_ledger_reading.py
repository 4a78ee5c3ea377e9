"""Reading the reference lab's ledger while the lab writes it: a line the lab is half way through is not
read (it would not parse); it is read whole on the next call."""

from __future__ import annotations

from pathlib import Path

from harness.lab.config import LabConfig
from harness.lab.process import LabProcess


def test_a_half_written_last_line_waits_for_the_next_read(tmp_path: Path) -> None:
    lab = LabProcess(LabConfig.model_validate({"ledger": str(tmp_path / "ledger.jsonl")}), tmp_path / "lab")
    lab.ledger_path.write_text('{"action": "routed", "cid": "a"}\n{"action": "dro', encoding="utf-8")
    assert [e["cid"] for e in lab.ledger()] == ["a"]
    with lab.ledger_path.open("a", encoding="utf-8") as f:
        f.write('p", "cid": "b"}\n')
    assert [e["cid"] for e in lab.ledger()] == ["a", "b"]
