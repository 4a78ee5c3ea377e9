"""The options of an acceptance run, declared once: the pytest plugin adds them to pytest, and `vtlab
run` recognises them wherever they stand on its command line (before or after scenario paths)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunOption:
    flag: str
    dest: str
    metavar: str
    help: str


RUN_OPTIONS = (
    RunOption("--lab", "vtlab_lab", "PATH", "lab file describing the target (default: fixtures/labs/embedded.yaml)"),
    RunOption("--fault", "vtlab_fault", "SPEC", "faults for the embedded lab, e.g. drop=0.03,dup=0.01,delay=400ms@0.1"),
    RunOption("--report-dir", "vtlab_report_dir", "DIR", "where run folders go (default: reports/)"),
    RunOption("--contract", "vtlab_contract", "PATH", "contract file (default: the one in fixtures/contract/)"),
    RunOption("--run-id", "vtlab_run_id", "ID", "name of the run folder (default: time-based); letters, digits, . _ -"),
)


def split_run_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """vtlab's own options (by flag) and everything else for pytest, in its original order.

    `--` ends vtlab's options: what follows goes to pytest untouched."""
    flags = {o.flag for o in RUN_OPTIONS}
    own: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest.extend(argv[i + 1:])
            break
        name, eq, value = arg.partition("=")
        if name in flags:
            if not eq:
                if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                    from harness.errors import InputError

                    raise InputError(f"{name} needs a value", place=name, fix=f"write `{name} VALUE`")
                value = argv[i + 1]
                i += 1
            if name in own and own[name] != value:
                from harness.errors import InputError

                raise InputError(f"{name} is given twice ({own[name]!r} and {value!r})", place=name,
                                 fix=f"give {name} once")
            own[name] = value
        else:
            rest.append(arg)
        i += 1
    return own, rest
