"""The SHA-256 manifest of a run's evidence bundle, and the sealing that makes its hashes mean something.

The manifest lists every file of the run folder (evidence.sqlite, summary.json, the lab's ledger and logs,
the plots, report.html, anything else that is there, dot-files and subfolders included), except
report.pdf: the PDF carries the manifest and is vouched for by its own signatures. report.html shows the
manifest, so it cannot list its own hash; its hash is added after it is written, and that extended
manifest is the one embedded in the PDF (`with_file`).

Sealing comes first: SQLite readers apply a `-wal` file beside the store whatever the store's own bytes
say, so the store is checkpointed into its main file and switched to rollback-journal mode, and a bundle
with any SQLite side file (`-wal`, `-shm`, `-journal`) is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from harness.errors import InputError

MANIFEST_NAME = "vtlab-manifest.json"
EVIDENCE_NAME = "evidence.sqlite"
REPORT_PDF = "report.pdf"
REPORT_HTML = "report.html"
SQLITE_SIDE_SUFFIXES = ("-wal", "-shm", "-journal")
# at the top of the run folder: the PDF (and its temporary file while it is written or signed, renamed away at
# once), and report.html, which `with_file` adds after it is written
_NOT_HASHED = (REPORT_PDF, REPORT_PDF + ".tmp", REPORT_HTML)


def seal_store(run_dir: Path) -> None:
    """Fold the write-ahead log into evidence.sqlite and switch it to rollback-journal mode, so that the
    main file's bytes are exactly what every reader sees and no side file remains.

    Done for every run, also one that was killed (its leftover WAL holds the last committed rows). If a
    writer still has the store open, nothing is sealed: InputError, rather than hashing a stale file."""
    db_path = run_dir / EVIDENCE_NAME
    if db_path.is_symlink() or not db_path.is_file():
        raise InputError(
            "no evidence store (evidence.sqlite) as a plain file in this folder",
            place=str(run_dir),
            fix="give a run folder that a run wrote, e.g. reports/latest",
        )
    busy, mode = 1, "?"
    try:
        db = sqlite3.connect(db_path, timeout=2, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls back a killed writer's hot journal
            busy = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            mode = str(db.execute("PRAGMA journal_mode=DELETE").fetchone()[0]).lower()
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise InputError(
                f"the evidence store cannot be sealed ({exc}): a run is still writing to it",
                place=str(db_path),
                fix="wait until the run has ended (or stop it), then render the report again",
            ) from exc
        raise InputError(
            f"the evidence store cannot be sealed ({exc}): it is damaged or not a vtlab evidence store",
            place=str(db_path),
            fix="render from the run folder the run wrote (or a copy of all of it), not a damaged copy",
        ) from exc
    if busy or mode != "delete":
        raise InputError(
            "the evidence store cannot be sealed: another process holds it open (a run still writing?)",
            place=str(db_path),
            fix="wait until the run has ended (or stop it), then render the report again",
        )
    left = side_files(run_dir)
    if left:
        raise InputError(
            f"SQLite side files remain after sealing: {', '.join(left)}",
            place=str(run_dir),
            fix="make sure no process has the evidence store open, then render the report again",
        )


def side_files(run_dir: Path) -> list[str]:
    """Relative paths of SQLite side files (`-wal`, `-shm`, `-journal`) anywhere in the run folder."""
    return [rel for rel, _ in _walk(run_dir) if rel.endswith(SQLITE_SIDE_SUFFIXES)]


def check_plain_folder(run_dir: Path) -> None:
    """Refuse a run folder holding symlinks or special files: rendering writes into it, and a link
    (`report.html -> ~/.bashrc`, `plots -> /etc`) would carry those writes out of it."""
    odd = [f"{rel} ({kind})" for rel, kind in _walk(run_dir) if kind != "file"]
    if odd:
        raise InputError(
            f"the run folder holds what a run never writes: {', '.join(odd[:5])}"
            + (f" and {len(odd) - 5} more" if len(odd) > 5 else ""),
            place=str(run_dir),
            fix="remove them (links and special files are never evidence)",
        )


def seal_run_folder(run_dir: Path) -> None:
    """Everything before a report is rendered: a plain folder, and a sealed store."""
    if run_dir.is_symlink():
        run_dir = run_dir.resolve()  # `reports/latest` is a link to the run folder; its contents may not be
    check_plain_folder(run_dir)
    from harness.evidence import EvidenceReader

    EvidenceReader(run_dir).close()  # a damaged or foreign store is refused with the reader's own message
    seal_store(run_dir)


def _walk(run_dir: Path) -> list[tuple[str, str]]:
    """(relative posix path, kind) of everything below `run_dir` except directories; kind is `file`,
    `symlink` or `special`. Symlinked folders are not followed."""
    out: list[tuple[str, str]] = []
    for top, dirs, files in os.walk(run_dir, followlinks=False):
        base = Path(top)
        for name in sorted(dirs):
            if (base / name).is_symlink():
                out.append(((base / name).relative_to(run_dir).as_posix(), "symlink"))
        dirs[:] = sorted(d for d in dirs if not (base / d).is_symlink())
        for name in sorted(files):
            p = base / name
            mode = p.lstat().st_mode
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else "special"
            out.append((p.relative_to(run_dir).as_posix(), kind))
    return sorted(out)


def bundle_files(run_dir: Path) -> list[Path]:
    """The regular files the manifest covers (everything but the report files at the top)."""
    return [run_dir / rel for rel, kind in _walk(run_dir) if kind == "file" and rel not in _NOT_HASHED]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compute_manifest(run_dir: Path) -> dict[str, Any]:
    """The manifest of a sealed run folder. Refuses SQLite side files, symlinks and special files: their
    presence means the hashes would not describe what a reader of the bundle sees."""
    left = side_files(run_dir)
    if left:
        raise InputError(
            f"the evidence store is not sealed: {', '.join(left)} beside it",
            place=str(run_dir),
            fix="render the report with `vtlab report`, which seals the store first",
        )
    check_plain_folder(run_dir)
    files = {p.relative_to(run_dir).as_posix(): sha256_file(p) for p in bundle_files(run_dir)}
    return {"algorithm": "sha256", "files": files}


def with_file(manifest: dict[str, Any], run_dir: Path, rel: str) -> dict[str, Any]:
    """The manifest plus one more file (report.html, hashed after it was written)."""
    path = run_dir / rel
    if path.is_symlink() or not path.is_file():
        raise InputError(f"{rel} is not a plain file", place=str(path), fix="render the report again")
    return {**manifest, "files": {**manifest.get("files", {}), rel: sha256_file(path)}}


def compare(manifest: dict[str, Any], run_dir: Path, *, report: Path | None = None) -> tuple[list[str], list[str]]:
    """(problems, notes) of a bundle against its manifest. Problems: a file missing or changed, any file the
    manifest does not list (a `-wal` beside the store changes what every reader sees; any other addition
    is not what was signed), symlinks and special files. `report` (the PDF being verified, if it lies in the
    bundle) and report.pdf at the top are the report itself, vouched for by its signatures."""
    problems: list[str] = []
    notes: list[str] = []
    recorded: dict[str, str] = manifest.get("files", {})
    if not isinstance(recorded, dict):
        return ["the manifest has no file list"], notes
    entries = dict(_walk(run_dir)) if run_dir.is_dir() else {}
    if not run_dir.is_dir():
        problems.append(f"{run_dir}: not a folder")
    for rel, digest in sorted(recorded.items()):
        kind = entries.get(rel)
        if kind is None:
            problems.append(f"{rel}: missing")
        elif kind != "file":
            problems.append(f"{rel}: is a {kind}, not the file that was hashed")
        elif sha256_file(run_dir / rel) != digest:
            problems.append(f"{rel}: changed (SHA-256 differs from the manifest)")
    skip = {REPORT_PDF}
    if report is not None:
        with contextlib.suppress(ValueError):  # the PDF lies outside the bundle
            skip.add(report.resolve().relative_to(run_dir.resolve()).as_posix())
    for rel, kind in sorted(entries.items()):
        if rel in recorded or (rel in skip and kind == "file"):
            continue
        if rel.endswith(SQLITE_SIDE_SUFFIXES):
            problems.append(
                f"{rel}: SQLite side file beside the store; every reader of the store would see "
                "its contents, which no hash covers (the sealed bundle has none)"
            )
        elif kind != "file":
            problems.append(f"{rel}: a {kind} in the bundle (never evidence; not in the manifest)")
        else:
            problems.append(f"{rel}: not in the manifest (added after the report was made)")
    return problems, notes
