"""The locust side of `vtlab load`: the entry module locust imports, kept small so that what locust
finds here is exactly the fleet's User classes and the event hooks.

Run by `vtlab load` (never by hand): `locust -f harness/load/locustfile.py` with VTLAB_LOAD_JOB naming
the job file (harness.load.fleet.Job). One process (local) or a master and workers (distributed).

- `harness.load.users`: `Device`, the locust User that is one simulated device of the fleet.
- `harness.load.node`: the node in each process that runs devices: probes, correlation of every arrival
  with the alarm it answers, latency from the intended send time into an HdrHistogram and locust's request
  events, the hand-over between workers, and the evidence lines (`out_dir/node-<pid>.jsonl`).
- `harness.load.health`: the generator's schedule lag, event-loop lag and CPU.
- `harness.load.merge`: progress.json and merged.json, the master's (or the lone node's) exact merge.
- `harness.load.hooks`: the locust event hooks registered here, and the process's job and node.

Locust collects the User subclasses in this module's namespace, imported ones included: `Device` must
stay imported here.
"""

from __future__ import annotations

from locust import events

from harness.load import hooks
from harness.load.greenio import patch_paho_for_gevent
from harness.load.users import Device

patch_paho_for_gevent()  # thousands of paho connections per process (see harness.load.greenio)

events.init.add_listener(hooks.on_init)
events.test_start.add_listener(hooks.on_test_start)
events.test_stop.add_listener(hooks.on_test_stop)

__all__ = ["Device"]
