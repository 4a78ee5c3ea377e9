"""A platform that floods a probe with garbage: every malformed message is kept as an arrival (the
report counts them), but only the first ones are described as findings, so the report stays readable
and its rendering bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path

from harness.evidence import EvidenceReader, EvidenceStore
from harness.links import Refused
from harness.tracking import DESCRIBED_MALFORMED, Tracker


def test_a_garbage_flood_is_counted_in_full_and_described_in_part(tmp_path: Path) -> None:
    store = EvidenceStore.create(tmp_path)
    tracker = Tracker(store)
    loop = asyncio.new_event_loop()
    flood = DESCRIBED_MALFORMED * 3
    try:
        for scenario in ("flood-1", "flood-2"):
            tracker.begin(scenario, loop)
            for i in range(flood):
                tracker.on_refused("rs-vest", Refused(i, "x" * 5000, "not JSON", where="vtlab/rs-vest/alarm"))
            tracker.on_refused("rs-ost", Refused(0, "{", "not JSON"))
            tracker.end()
        store.flush()
    finally:
        loop.close()
        store.close()
    reader = EvidenceReader(tmp_path / "evidence.sqlite")
    try:
        for scenario in ("flood-1", "flood-2"):  # the limit is per scenario and probe
            (n,) = reader.rows(
                "SELECT COUNT(*) FROM arrivals WHERE scenario = ? AND kind = 'malformed' AND probe = 'rs-vest'",
                (scenario,),
            )[0]
            assert n == flood
            texts = [
                r["text"]
                for r in reader.rows(
                    "SELECT text FROM observations WHERE scenario = ? AND kind = 'finding'", (scenario,)
                )
            ]
            vest = [t for t in texts if t.startswith("rs-vest")]
            assert len(vest) == DESCRIBED_MALFORMED + 1 and "counted" in vest[-1]
            assert max(len(t) for t in vest) < 1000  # the 5,000 characters of garbage are not repeated
            assert sum(t.startswith("rs-ost") for t in texts) == 1
    finally:
        reader.close()
    assert tracker.malformed == 2 * (flood + 1)
