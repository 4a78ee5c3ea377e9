"""The locust event hooks of one process, and the process-wide state they share: the job file, and the
node that runs this process's devices (none on a master, which only merges what its workers report).
Kept apart from the User classes so locust's entry module (harness/load/locustfile.py) stays small: it
registers these hooks, and the devices find their node here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gevent
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from harness.load.fleet import Job
from harness.load.merge import FINAL_MESSAGE, report_final, write_merged, write_progress
from harness.load.node import ARRIVALS_MESSAGE, DRAINED_MESSAGE, FINISH_MESSAGE, Node

JOB_ENV = "VTLAB_LOAD_JOB"

_JOB: Job | None = None
NODE: Node | None = None
_FINALS: dict[str, dict[str, Any]] = {}
_REPORTS: dict[str, dict[str, Any]] = {}
_DRAINED: set[str] = set()


def job() -> Job:
    global _JOB
    if _JOB is None:
        path = os.environ.get(JOB_ENV)
        if not path:
            raise SystemExit(f"{JOB_ENV} is not set: this locustfile is run by `vtlab load`")
        _JOB = Job.read(Path(path))
    return _JOB


def on_init(environment: Environment, **_kw: Any) -> None:
    global NODE
    runner = environment.runner
    out = Path(job().out_dir)
    if isinstance(runner, MasterRunner):

        def on_final(environment: Environment, msg: Any, **_k: Any) -> None:
            _FINALS[msg.node_id] = msg.data
            write_merged(out, list(_FINALS.values()))
            if len(_FINALS) >= job().workers:  # every figure is in: stop as the run time would
                gevent.spawn(runner.quit)  # not from this handler: quitting kills the greenlet it runs on

        def on_drained(environment: Environment, msg: Any, **_k: Any) -> None:
            _DRAINED.add(msg.node_id)
            if len(_DRAINED) >= job().workers:
                runner.send_message(FINISH_MESSAGE, None)

        def on_report(client_id: str, data: dict[str, Any]) -> None:
            if "vtlab" in data:
                _REPORTS[client_id] = data["vtlab"]
                write_progress(out, list(_REPORTS.values()))

        def on_arrivals(environment: Environment, msg: Any, **_k: Any) -> None:
            runner.send_message(ARRIVALS_MESSAGE, msg.data)  # to every worker; the owner takes its own

        runner.register_message(FINAL_MESSAGE, on_final)
        runner.register_message(DRAINED_MESSAGE, on_drained)
        runner.register_message(ARRIVALS_MESSAGE, on_arrivals)
        environment.events.worker_report.add_listener(on_report)
        return
    NODE = Node(environment, job())
    if isinstance(runner, WorkerRunner):

        def report(client_id: str, data: dict[str, Any]) -> None:
            if NODE is not None and not NODE.finished:
                data["vtlab"] = NODE.snapshot()

        environment.events.report_to_master.add_listener(report)

        def on_arrivals(environment: Environment, msg: Any, **_k: Any) -> None:
            if NODE is not None and not NODE.finished:
                NODE.on_forwarded(msg.data)

        runner.register_message(ARRIVALS_MESSAGE, on_arrivals)

        def on_finish(environment: Environment, msg: Any, **_k: Any) -> None:
            if NODE is not None:
                NODE.finish_now = True

        runner.register_message(FINISH_MESSAGE, on_finish)


def on_test_start(environment: Environment, **_kw: Any) -> None:
    if NODE is not None and not NODE.started:
        NODE.start()


def on_test_stop(environment: Environment, **_kw: Any) -> None:
    if NODE is not None and not NODE.finished:  # stopped before the end of the schedule
        report_final(environment, NODE.finish(), Path(job().out_dir))
