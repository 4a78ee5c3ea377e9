"""`vtlab load SCENARIO [--lab PATH] [--users N] [--rate R] [--duration T] [--workers N] [--ui]`.

Exit codes as `vtlab run`: 0 approved, 1 not approved or incomplete, 2 bad input or an unusable target.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

EXIT_APPROVED, EXIT_NOT_APPROVED = 0, 1


def _load(args: argparse.Namespace) -> int:
    from harness.load.runner import LoadOptions, run_load
    from harness.report.table import requirement_table

    opts = LoadOptions(
        users=args.users,
        rate=args.rate,
        duration=args.duration,
        workers=args.workers,
        ui=args.ui,
        run_id=args.run_id,
        report_dir=Path(args.report_dir),
        faults=args.fault,
        contract=Path(args.contract) if args.contract else None,
        argv=args.argv,
    )
    result = run_load(Path(args.scenario), Path(args.lab) if args.lab else None, opts)
    for line in requirement_table(result.summary):
        print(line)
    print(f"\nverdict: {result.summary['verdict'].upper()} - {result.summary['reason']}")
    return EXIT_APPROVED if result.summary["verdict"] == "approved" else EXIT_NOT_APPROVED


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("scenario", help="load scenario file (a YAML file with `load:`), e.g. scenarios/capacity/...")
    p.add_argument("--lab", help="lab file (default: fixtures/labs/embedded.yaml)")
    p.add_argument("--users", type=int, help="simulated devices (overrides load.devices)")
    p.add_argument("--rate", help="fleet alarm rate, e.g. 50/s (overrides load.rate)")
    p.add_argument("--duration", help="how long alarms are sent, e.g. 30s (overrides load.duration)")
    p.add_argument(
        "--workers", type=int, default=0, help="locust workers on this machine under a master (default 0: one process)"
    )
    p.add_argument(
        "--ui", action="store_true", help="show locust's web UI on 127.0.0.1 (the run still stops by itself)"
    )
    p.add_argument("--fault", help="faults to inject into the embedded lab, e.g. drop=0.05")
    p.add_argument("--contract", help="contract file (default: the one in fixtures/contract/)")
    p.add_argument("--report-dir", default="reports", help="folder for run folders (default: reports)")
    p.add_argument("--run-id", help="name of the run folder (default: time and a random suffix)")


def register(subparsers: Any) -> None:
    """Add `vtlab load` to the vtlab command (harness.cli.build_parser calls this)."""
    p = subparsers.add_parser("load", help="run a load (capacity) scenario with locust and judge it")
    add_arguments(p)
    p.set_defaults(func=_load, argv=None)


def main(argv: list[str] | None = None) -> int:
    """`python -m harness.load.commands ...` until the vtlab command registers `load`."""
    import sys

    from harness.errors import VtlabError

    parser = argparse.ArgumentParser(prog="vtlab load")
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.argv = ["vtlab", "load", *(sys.argv[1:] if argv is None else argv)]
    try:
        return _load(args)
    except VtlabError as exc:
        print(f"vtlab: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vtlab load: interrupted; the run folder holds what was measured", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
