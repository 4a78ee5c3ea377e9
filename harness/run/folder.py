"""A run's folder: a fresh, never overwritten directory under the report folder, its evidence store,
the `latest` link, and the provenance a signed report must carry."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.errors import InputError
from harness.evidence import EvidenceStore
from harness.yamlfile import SourceFile

ROOT = Path(__file__).resolve().parents[2]
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def check_run_id(run_id: str) -> str:
    """A run id is a plain folder name: it can never reach outside the report folder."""
    if not RUN_ID.match(run_id) or ".." in run_id:
        raise InputError(
            f"run id {run_id!r} is not a plain folder name",
            place="--run-id",
            fix="use letters, digits, `.`, `_` and `-` only (at most 80, no `..`, no `/`), e.g. day2-retest",
        )
    return run_id


def git_revision(root: Path = ROOT) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    if not rev:
        return None
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    return rev + ("-dirty" if dirty else "")


def vtlab_version() -> str:
    try:
        from importlib.metadata import version

        return version("vtlab")
    except Exception:
        return "0+checkout"


class RunFolder:
    """Creates `report_dir/run_id` (refusing one that exists with content) and its evidence store."""

    def __init__(self, report_dir: Path, run_id: str | None = None) -> None:
        self.run_id = check_run_id(run_id) if run_id else new_run_id()
        self.nonce = secrets.token_hex(4)  # makes correlation ids unique across runs, whatever the run id
        if report_dir.exists() and not report_dir.is_dir():
            raise InputError(f"{report_dir} is a file, not a folder", place="--report-dir",
                             fix="give a folder where run folders can be made")
        self.report_dir = report_dir
        self.path = report_dir / self.run_id
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise InputError(f"run folder {self.path} exists already", place="--run-id",
                             fix="a run folder is never overwritten: choose another run id")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot make the run folder {self.path}: {exc.strerror or exc}",
                             place="--report-dir", fix="give a writable folder") from None
        self.evidence = EvidenceStore.create(self.path)

    def provenance(self, argv: list[str] | None) -> dict[str, Any]:
        return {
            "vtlab_version": vtlab_version(),
            "git_revision": git_revision(),
            "machine": {"hostname": platform.node(), "platform": platform.platform(),
                        "python": sys.version.split()[0], "cpus": os.cpu_count()},
            "clock": {"stimulus_and_arrival": "time.monotonic_ns (CLOCK_MONOTONIC), one process",
                      "resolution_ns": int(time.get_clock_info("monotonic").resolution * 1e9) or 1,
                      "wall": "UTC"},
            "argv": argv or sys.argv,
            "correlation_nonce": self.nonce,
        }

    def record_file(self, role: str, src: SourceFile) -> None:
        self.evidence.input_file(role, str(src.path), src.sha256, src.text)

    def record_path(self, role: str, path: Path) -> None:
        data = path.read_bytes()
        self.evidence.input_file(role, str(path), hashlib.sha256(data).hexdigest(), data.decode("utf-8", "replace"))

    def link_latest(self) -> None:
        latest = self.report_dir / "latest"
        tmp = self.report_dir / f".latest-{self.run_id}"
        try:
            tmp.symlink_to(self.run_id, target_is_directory=True)
            tmp.replace(latest)
        except OSError:  # a file system without symlinks: a text file naming the run
            (self.report_dir / "latest.txt").write_text(self.run_id + "\n")
