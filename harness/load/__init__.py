"""Load runs (capacity): locust users that are devices, open-model shapes, exact histogram merges.

`vtlab load SCENARIO` (harness.load.commands) runs a load scenario file (harness.load.scenario) with
locust (harness.load.locustfile) against the lab, and writes its evidence and verdicts into the same run
folder format as `vtlab run` (harness.load.runner). Reuses protocols/, devices/, evidence and acceptance;
brings only scheduling (harness.load.shapes) and scale. See docs/load.md.
"""

from harness.load.scenario import is_load_scenario

__all__ = ["is_load_scenario"]
