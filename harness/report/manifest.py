"""The SHA-256 manifest of a run's evidence bundle: every file of the run folder that the report rests on
(evidence.sqlite, summary.json, the lab's ledger and logs, the plots), not the report files themselves."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

MANIFEST_NAME = "vtlab-manifest.json"
_SKIP_SUFFIXES = (".pdf", ".html", "-wal", "-shm", "-journal", ".tmp", ".p12", ".pem", ".key")
_SKIP_DIRS = {"allure-results", "allure-report", "__pycache__"}


def seal_store(run_dir: Path) -> None:
    """Fold the SQLite write-ahead log into evidence.sqlite so its bytes hold everything measured.

    Only when the run has ended (a live writer keeps its WAL); a killed run's leftover WAL is folded in too,
    since nobody writes to it any more. Failures leave the store as it is."""
    db_path = run_dir / "evidence.sqlite"
    if not db_path.exists():
        return
    try:
        db = sqlite3.connect(db_path, timeout=2)
        try:
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            db.execute("PRAGMA journal_mode=DELETE")
        finally:
            db.close()
    except sqlite3.Error:
        pass


def bundle_files(run_dir: Path) -> list[Path]:
    out = []
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if not p.is_file() or p.is_symlink():
            continue
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.name.endswith(_SKIP_SUFFIXES):
            continue
        out.append(p)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def compute_manifest(run_dir: Path) -> dict[str, Any]:
    files = {p.relative_to(run_dir).as_posix(): sha256_file(p) for p in bundle_files(run_dir)}
    return {"algorithm": "sha256", "files": files}


def compare(manifest: dict[str, Any], run_dir: Path) -> tuple[list[str], list[str]]:
    """(problems, notes): files missing or changed are problems; files added since are notes."""
    problems, notes = [], []
    recorded: dict[str, str] = manifest.get("files", {})
    for rel, digest in sorted(recorded.items()):
        p = run_dir / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(p) != digest:
            problems.append(f"{rel}: changed (SHA-256 differs from the manifest)")
    for p in bundle_files(run_dir):
        rel = p.relative_to(run_dir).as_posix()
        if rel not in recorded:
            notes.append(f"{rel}: not in the manifest (added after the report was made)")
    return problems, notes
