"""The `vtlab` command: run, report, schema, steps (and the report commands of harness.report).

Exit codes: 0 approved (or the command succeeded), 1 not approved or incomplete, 2 bad input or an
unusable target.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path

from harness.errors import InputError, VtlabError
from harness.options import RUN_OPTIONS, split_run_args

EXIT_APPROVED, EXIT_NOT_APPROVED, EXIT_BAD_INPUT = 0, 1, 2

Command = Callable[[argparse.Namespace], int]


def _is_scenario_path(arg: str) -> bool:
    """A scenario file or a folder holding one: the value of a pytest option (`--alluredir DIR`) is not."""
    path = Path(arg.split("::", 1)[0])
    if path.is_file():
        return path.suffix in (".yaml", ".yml")
    return path.is_dir() and any(p.suffix in (".yaml", ".yml") for p in path.rglob("*.y*ml"))


def _run(args: argparse.Namespace) -> int:
    import pytest

    from harness.run.folder import ROOT, check_run_id, new_run_id

    own, pytest_args = split_run_args(list(args.pytest_args))
    run_id = check_run_id(own["--run-id"]) if "--run-id" in own else new_run_id()
    report_dir = Path(own.get("--report-dir") or "reports").resolve()
    if report_dir.exists() and not report_dir.is_dir():
        raise InputError(f"{report_dir} is a file, not a folder", place="--report-dir",
                         fix="give a folder where run folders can be made")
    if not any(not a.startswith("-") and _is_scenario_path(a) for a in pytest_args):
        pytest_args.append(str(ROOT / "scenarios"))
    pytest_args += ["--report-dir", str(report_dir), "--run-id", run_id, "-p", "no:cacheprovider"]
    if "--lab" in own:
        pytest_args += ["--lab", str(Path(own["--lab"]).resolve())]
    if "--fault" in own:
        from harness.faults import parse_faults

        parse_faults(own["--fault"], "--fault")
        pytest_args += ["--fault", own["--fault"]]
    if "--contract" in own:
        pytest_args += ["--contract", str(Path(own["--contract"]).resolve())]
    if "--interactive" in pytest_args and "-s" not in pytest_args:
        pytest_args.append("-s")  # the tester answers on this terminal: pytest must not capture it
    if (report_dir / run_id).exists():
        raise InputError(f"run folder {report_dir / run_id} exists already", place="--run-id",
                         fix="a run folder is never overwritten: choose another run id")
    rc = pytest.main(pytest_args)
    summary_path = report_dir / run_id / "summary.json"
    if not summary_path.exists():
        if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
            print("vtlab: no scenario was collected; give scenario files or folders", file=sys.stderr)
        else:
            print("vtlab: nothing was judged: fix the input named above and run again", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if rc == pytest.ExitCode.INTERRUPTED and not summary["scenarios"]:
        print(f"vtlab: nothing was judged (see the error above); evidence in {report_dir / run_id}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for hook in _after_run_hooks():
        hook(report_dir / run_id)
    print(f"vtlab: {summary['verdict']} ({summary['reason']}); report folder {report_dir / run_id}")
    return EXIT_APPROVED if summary["verdict"] == "approved" else EXIT_NOT_APPROVED


def _after_run_hooks() -> list[Callable[[Path], None]]:
    """Things that render from a finished run (the HTML/PDF report), when installed."""
    try:
        from harness.report.commands import after_run
    except ImportError:
        return []
    return [after_run]


def _lab(args: argparse.Namespace) -> int:
    """Run the embedded reference lab alone, for exploring it or pointing other tools at it."""
    import contextlib
    import signal
    import tempfile
    import threading

    from harness.lab.process import LabProcess
    from harness.labfile import load_lab
    from harness.reference_lab import embedded_target
    from harness.run.target import run_faults as lab_faults
    from harness.session import DEFAULT_LAB
    from harness.units import parse_duration

    lab = load_lab(Path(args.lab) if args.lab else DEFAULT_LAB)
    if lab.spec.platform.kind != "embedded":
        raise InputError("this lab file describes an external platform", place=str(lab.path),
                         fix="`vtlab lab` starts the embedded reference lab: use a lab file with kind: embedded")
    seconds = parse_duration(args.for_, "--for") / 1e9 if args.for_ else None
    target = embedded_target(lab, lab_faults(lab, args.fault))
    workdir = Path(tempfile.mkdtemp(prefix="vtlab-lab-"))
    try:
        with LabProcess(target.config, workdir, remove_workdir=True) as proc:
            print(f"reference lab running: broker {proc.broker_url} ({proc.broker_kind}, "
                  f"MQTT {proc.mqtt_version}), site `{lab.spec.site}`, access control {proc.access_control}")
            if target.pki is not None:
                print(f"  TLS: ca {target.pki.ca_cert}; one client certificate per identity in "
                      f"{target.pki.ca_cert.parent} (client-<identity>.pem / .key)")
                print(f"  identities: {', '.join(target.identities)}")
            print(f"  faults: {target.config.faults or 'none'}; ledger {proc.ledger_path}")
            for name, template in lab.spec.topics.items():
                print(f"  topic {name}: {template.replace('{site}', lab.spec.site)}")
            print("stop with Ctrl-C" if seconds is None else f"stopping after {args.for_}", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait(seconds)
    finally:
        target.cleanup()
    return 0


def _summary(args: argparse.Namespace) -> int:
    from harness.report.summary import write_summary
    from harness.report.table import requirement_table

    run_dir = Path(args.run_dir or "reports/latest")
    summary = write_summary(run_dir)
    for line in requirement_table(summary):
        print(line)
    print(f"\nverdict: {summary['verdict'].upper()} - {summary['reason']}")
    print(f"summary: {run_dir / 'summary.json'}")
    return EXIT_APPROVED if summary["verdict"] == "approved" else EXIT_NOT_APPROVED


def _schema(args: argparse.Namespace) -> int:
    from harness.schema import write_schemas

    for path in write_schemas(Path(args.out)):
        print(path)
    return 0


def _steps(args: argparse.Namespace) -> int:
    from harness.schema import step_reference

    print(step_reference())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vtlab", description="Acceptance tests of welfare technology.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run", help="run the acceptance suite against a lab and judge it",
        description="Options: " + "; ".join(f"{o.flag} {o.metavar}: {o.help}" for o in RUN_OPTIONS)
        + ". They may stand before or after scenario paths; every other argument goes to pytest.",
    )
    run.add_argument("pytest_args", nargs=argparse.REMAINDER, help="scenario paths, vtlab and pytest options")
    run.set_defaults(func=_run)

    lab = sub.add_parser("lab", help="run the embedded reference lab alone and print how to reach it")
    lab.add_argument("--lab", help="lab file (default: fixtures/labs/embedded.yaml)")
    lab.add_argument("--fault", help="faults to inject, e.g. drop=0.05")
    lab.add_argument("--for", dest="for_", metavar="DURATION", help="stop after this long, e.g. 10m")
    lab.set_defaults(func=_lab)

    summary = sub.add_parser("summary", help="rebuild summary.json of a run from its evidence store")
    summary.add_argument("run_dir", nargs="?", help="run folder (default: reports/latest)")
    summary.set_defaults(func=_summary)

    schema = sub.add_parser("schema", help="write JSON Schemas for scenario, contract and lab files")
    schema.add_argument("--out", default="schemas", help="folder to write to (default: schemas)")
    schema.set_defaults(func=_schema)

    steps = sub.add_parser("steps", help="print the reference of all scenario steps")
    steps.set_defaults(func=_steps)

    scan = sub.add_parser("scan", help="list the BLE devices in radio range with their decoded advertisements")
    from harness.ble_scan import add_arguments as scan_arguments
    from harness.ble_scan import run as scan_run

    scan_arguments(scan)
    scan.set_defaults(func=scan_run)

    from harness.labtools import register as register_labtools

    register_labtools(sub)
    from harness.load.commands import register as register_load

    register_load(sub)
    try:
        from harness.report.commands import register
    except ImportError:
        report = sub.add_parser("report", help="rebuild summary.json of a run from its evidence store")
        report.add_argument("run_dir", nargs="?", help="run folder (default: reports/latest)")
        report.set_defaults(func=_summary)
    else:
        register(sub)
    return parser


def _terminate_like_ctrl_c() -> None:
    """SIGTERM ends a command as Ctrl-C does, so `finally` blocks remove throw-away keys and a run is
    closed as interrupted with its summary written."""
    import signal

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:  # everything after `run` is vtlab's run options and pytest's, in order
        args = argparse.Namespace(command="run", func=_run, pytest_args=argv[1:])
        if any(a in ("-h", "--help") for a in argv[1:2]):
            parser.parse_args(argv)
    else:
        args = parser.parse_args(argv)
    func: Command = args.func
    _terminate_like_ctrl_c()
    try:
        return func(args)
    except KeyboardInterrupt:
        print("vtlab: interrupted", file=sys.stderr)
        return EXIT_NOT_APPROVED
    except VtlabError as exc:
        print(f"vtlab: {exc}", file=sys.stderr)
        return exc.exit_code
    except sqlite3.Error as exc:  # a store damaged inside a value, past what the reader's checks can see
        print(f"vtlab: the evidence store could not be read: {exc}\n  fix: it is damaged; use the signed copy "
              "(vtlab verify says which file differs from its manifest)", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
