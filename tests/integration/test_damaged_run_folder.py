"""Damaged run folders: `vtlab summary` and `vtlab report` refuse a store that is not a readable vtlab evidence
store with exit 2 and the file named (exit 1 would read as "not approved"), and reading a store never
changes or adds a file beside it, while a store with a live or leftover write-ahead log is still read whole."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.errors import InputError
from harness.evidence import EVIDENCE_FILE, EvidenceReader, EvidenceStore
from tests.helpers import ROOT, VTLAB

NOTES = 300


def snapshot(folder: Path) -> dict[str, str]:
    """Every path under `folder` with a hash of its bytes (or `dir`)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "other"
    return out


def good_store(folder: Path, notes: int = NOTES) -> Path:
    """A run folder whose store was written and closed by the real writer."""
    store = EvidenceStore.create(folder)
    store.run_started("run-1", {"lab": "embedded"})
    for i in range(notes):
        store.observation(None, "note", f"merknad {i} " * 4)
    store.flush()
    store.close()
    assert sorted(os.listdir(folder)) == [EVIDENCE_FILE]
    return folder / EVIDENCE_FILE


def sqlite_edit(db: Path, *sql: str) -> None:
    con = sqlite3.connect(db, isolation_level=None)
    try:
        for statement in sql:
            con.execute(statement)
        con.execute("PRAGMA journal_mode=DELETE")
    finally:
        con.close()


# Each variant damages a good store in `folder` and says what the message must contain.
def swap_cells(db: Path) -> None:
    """Swap the first two cell pointers of a table leaf page: its rowids are then out of order."""
    data = bytearray(db.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    for start in range(size, len(data), size):
        if data[start] == 0x0D and int.from_bytes(data[start + 3 : start + 5], "big") >= 2:
            a, b = start + 8, start + 10
            data[a:b], data[b : b + 2] = data[b : b + 2], data[a:b]
            db.write_bytes(bytes(data))
            return
    raise AssertionError("no table leaf page with two cells")


def _truncate(frac: float) -> Callable[[Path], str]:
    def damage(db: Path) -> str:
        data = db.read_bytes()
        db.write_bytes(data[: int(len(data) * frac)])
        return "the evidence store "

    return damage


def _truncate_to_header(db: Path) -> str:
    db.write_bytes(db.read_bytes()[:100])
    return "cut short"


def _rowids_out_of_order(db: Path) -> str:
    swap_cells(db)
    return "is damaged (SQLite integrity check"


def _random(db: Path) -> str:
    db.write_bytes(random.Random(7).randbytes(64 * 1024))
    return "not an SQLite database"


def _random_after_header(db: Path) -> str:
    data = db.read_bytes()
    db.write_bytes(data[:100] + random.Random(8).randbytes(len(data) - 100))
    return "evidence store"


def _empty(db: Path) -> str:
    db.write_bytes(b"")
    return "empty (0 bytes)"


def _directory(db: Path) -> str:
    db.unlink()
    db.mkdir()
    (db / "x").write_text("x")
    return "is a directory, not a file"


def _foreign(db: Path) -> str:
    db.unlink()
    sqlite_edit(db, "CREATE TABLE contacts (name TEXT)")
    return "not a vtlab evidence store"


def _missing_table(db: Path) -> str:
    sqlite_edit(db, "DROP TABLE acks")
    return "lacks what this vtlab reads (table acks)"


def _missing_column(db: Path) -> str:
    sqlite_edit(db, "ALTER TABLE verdicts DROP COLUMN limit_text")
    return "verdicts.limit_text"


def _newer(db: Path) -> str:
    sqlite_edit(db, "PRAGMA user_version=99")
    return "written by a newer vtlab (schema 99"


def _wal_is_a_directory(db: Path) -> str:
    Path(f"{db}-wal").mkdir()
    return "evidence.sqlite-wal is a directory"


DAMAGE = {
    "truncated-half": _truncate(0.5),
    "truncated-to-header": _truncate_to_header,
    "rowids-out-of-order": _rowids_out_of_order,
    "truncated-last-page": _truncate(0.98),
    "random": _random,
    "random-after-header": _random_after_header,
    "empty": _empty,
    "directory": _directory,
    "foreign-sqlite": _foreign,
    "missing-table": _missing_table,
    "missing-column": _missing_column,
    "newer-schema": _newer,
    "wal-is-a-directory": _wal_is_a_directory,
}


def vtlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VTLAB), *args], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(DAMAGE))
def test_summary_and_report_refuse_a_damaged_store_and_change_nothing(tmp_path: Path, variant: str) -> None:
    folder = tmp_path / "run"
    db = good_store(folder)
    needle = DAMAGE[variant](db)
    before = snapshot(folder)
    with pytest.raises(InputError) as info:
        EvidenceReader(folder)
    assert needle in info.value.problem
    assert info.value.place is not None and info.value.place.source.startswith(str(db))
    assert snapshot(folder) == before
    for command in (["summary", str(folder)], ["report", str(folder), "--no-pdf"]):
        result = vtlab(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, result.stderr
        named = str(db) if command[0] == "summary" else str(folder)  # `report` may name the folder
        assert named in result.stderr and "fix:" in result.stderr, result.stderr
        assert snapshot(folder).keys() == before.keys(), command  # no file added or removed
        if command[0] == "summary":
            assert snapshot(folder) == before  # nor changed (`report` first tries to seal the store)


def all_rows(folder: Path) -> dict[str, list[tuple[object, ...]]]:
    con = sqlite3.connect(f"file:{folder / EVIDENCE_FILE}?mode=ro&immutable=1", uri=True)
    con.text_factory = bytes
    try:
        tables = [name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {str(t): con.execute(f"SELECT * FROM {t.decode()} ORDER BY rowid").fetchall() for t in tables}
    finally:
        con.close()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=80)
@given(data=st.data())
def test_a_truncated_or_overwritten_store_is_refused_or_read_whole(tmp_path: Path, data: st.DataObject) -> None:
    """Never a crash, never a file added, and a truncated store never reads as fewer rows: it is refused,
    or (when only unused pages were cut off) it reads exactly as before."""
    base = tmp_path / "base"
    if not base.exists():
        good_store(base, notes=100)
    raw = bytearray((base / EVIDENCE_FILE).read_bytes())
    truncated = data.draw(st.booleans(), label="truncate")
    if truncated:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 16), label="bytes overwritten")):
            raw[data.draw(st.integers(0, len(raw) - 1), label="offset")] = data.draw(st.integers(0, 255))
    folder = tmp_path / "damaged"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    (folder / EVIDENCE_FILE).write_bytes(bytes(raw))
    try:
        reader = EvidenceReader(folder)
    except InputError as exc:
        assert exc.place is not None and exc.place.source == str(folder / EVIDENCE_FILE)
        assert "\n" not in exc.problem
    else:
        reader.close()
        if truncated:  # a changed byte inside a value can leave a well-formed store; a cut one cannot lose rows
            assert all_rows(folder) == all_rows(base)
    assert sorted(os.listdir(folder)) == [EVIDENCE_FILE]


# --- stores with a write-ahead log beside them are read whole, and left as they are -------------------
WRITER = """
import os, sys
from pathlib import Path
from harness.evidence import EvidenceStore
store = EvidenceStore.create(Path(sys.argv[1]))
store.run_started("run-1", {{}})
for i in range({n}):
    store.observation(None, "note", f"merknad {{i}}")
store.flush()
print("flushed", flush=True)
{after}
"""


def start_writer(folder: Path, n: int, after: str) -> subprocess.Popen[str]:
    code = WRITER.format(n=n, after=after)
    return subprocess.Popen(
        [sys.executable, "-c", code, str(folder)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def count_notes(folder: Path) -> int:
    reader = EvidenceReader(folder)
    try:
        return len(reader.observations())
    finally:
        reader.close()


def killed_run(folder: Path) -> None:
    writer = start_writer(folder, NOTES, "import signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert writer.stdout is not None and writer.stdout.readline().strip() == "flushed"
    assert writer.wait(timeout=60) == -9
    assert {"evidence.sqlite-wal", "evidence.sqlite-shm"} <= set(os.listdir(folder))


def test_a_killed_runs_store_is_read_whole_without_touching_it(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    killed_run(folder)
    wal_size = Path(folder / "evidence.sqlite-wal").stat().st_size
    assert wal_size > 0  # the rows are (partly) only in the WAL: reading the main file alone would lose them
    before = snapshot(folder)
    notes = count_notes(folder)
    assert notes == NOTES
    before.pop("evidence.sqlite-shm")  # the shared-memory index may be rebuilt; it holds no data
    after = snapshot(folder)
    after.pop("evidence.sqlite-shm")
    assert after == before


def test_a_copied_folder_with_a_wal_but_no_shm_is_read_whole_without_adding_files(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    killed_run(folder)
    os.remove(folder / "evidence.sqlite-shm")
    before = snapshot(folder)
    copies = set(Path(tempfile.gettempdir()).glob("vtlab-evidence-*"))
    reader = EvidenceReader(folder)
    try:
        assert len(reader.observations()) == NOTES
        assert snapshot(folder) == before
    finally:
        reader.close()
    assert snapshot(folder) == before
    assert set(Path(tempfile.gettempdir()).glob("vtlab-evidence-*")) == copies  # the private copy is gone


def test_a_store_being_written_is_read_as_far_as_committed(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    more = "sys.stdin.readline()\nfor i in range(50):\n    store.observation(None, 'note', 'mer')\nstore.flush()\n"
    more += "print('flushed', flush=True)\nsys.stdin.readline()\nstore.close()\n"
    writer = start_writer(folder, NOTES, more)
    assert writer.stdin is not None and writer.stdout is not None
    try:
        assert writer.stdout.readline().strip() == "flushed"
        names = sorted(os.listdir(folder))
        assert count_notes(folder) == NOTES
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "flushed"
        assert count_notes(folder) == NOTES + 50
        assert sorted(os.listdir(folder)) == names
        writer.stdin.write("close\n")
        writer.stdin.flush()
        assert writer.wait(timeout=60) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert sorted(os.listdir(folder)) == [EVIDENCE_FILE]  # the writer's close folded its WAL in: nothing stray
    assert count_notes(folder) == NOTES + 50


def test_reading_an_ended_store_creates_no_files(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    good_store(folder)
    before = snapshot(folder)
    reader = EvidenceReader(folder)
    try:
        assert reader.run()["run_id"] == "run-1"
        assert len(reader.observations()) == NOTES
        assert snapshot(folder) == before  # mode=ro alone would have made -wal and -shm here
    finally:
        reader.close()
    assert snapshot(folder) == before


# --- one test per message -----------------------------------------------------------------------------
def refusal(folder: Path) -> InputError:
    with pytest.raises(InputError) as info:
        EvidenceReader(folder)
    assert info.value.fix
    return info.value


def test_message_no_store(tmp_path: Path) -> None:
    err = refusal(tmp_path)
    assert err.problem == "no evidence store here" and "reports/latest" in (err.fix or "")
    assert err.place is not None and err.place.source == str(tmp_path / EVIDENCE_FILE)


def test_message_not_a_file(tmp_path: Path) -> None:
    (tmp_path / EVIDENCE_FILE).mkdir()
    err = refusal(tmp_path)
    assert err.problem == "evidence.sqlite is a directory, not a file: this is not an evidence store vtlab wrote"
    os.rmdir(tmp_path / EVIDENCE_FILE)
    os.mkfifo(tmp_path / EVIDENCE_FILE)
    assert "is a special file" in refusal(tmp_path).problem


def test_message_cannot_stat(tmp_path: Path) -> None:
    (tmp_path / EVIDENCE_FILE).symlink_to(tmp_path / EVIDENCE_FILE)
    err = refusal(tmp_path)
    assert err.problem.startswith("the evidence store cannot be read: Too many levels of symbolic links")


def test_message_empty(tmp_path: Path) -> None:
    (tmp_path / EVIDENCE_FILE).write_bytes(b"")
    err = refusal(tmp_path)
    assert err.problem == "the evidence store is empty (0 bytes): the run wrote nothing into it"
    assert "rerun the scenarios" in (err.fix or "")


def test_message_not_sqlite(tmp_path: Path) -> None:
    (tmp_path / EVIDENCE_FILE).write_text("summary: yes\n")
    err = refusal(tmp_path)
    assert err.problem.startswith("this is not an SQLite database")


def test_message_damaged(tmp_path: Path) -> None:
    swap_cells(good_store(tmp_path))
    err = refusal(tmp_path)
    assert err.problem.startswith("the evidence store is damaged (SQLite integrity check: ")
    assert "out of order" in err.problem and "\n" not in err.problem
    assert "rerun the scenarios" in (err.fix or "")


def test_message_cut_short(tmp_path: Path) -> None:
    db = good_store(tmp_path)
    data = db.read_bytes()
    db.write_bytes(data[:-72])  # SQLite alone reads the lost end as zeros: a row of empty text, check "ok"
    err = refusal(tmp_path)
    assert err.problem.startswith(f"the evidence store is cut short: {len(data) - 72} bytes, where its header says")
    assert "the end of the file is lost" in err.problem


def test_message_cannot_be_read(tmp_path: Path) -> None:
    _random_after_header(good_store(tmp_path))
    err = refusal(tmp_path)
    assert err.problem.startswith("the evidence store cannot be read: ")


def test_message_not_vtlab(tmp_path: Path) -> None:
    sqlite_edit(tmp_path / EVIDENCE_FILE, "CREATE TABLE t (x)")
    err = refusal(tmp_path)
    assert err.problem.startswith("this SQLite file is not a vtlab evidence store (it has none of the tables")


def test_message_newer(tmp_path: Path) -> None:
    sqlite_edit(good_store(tmp_path), "PRAGMA user_version=99")
    err = refusal(tmp_path)
    assert err.problem.startswith("the evidence store was written by a newer vtlab (schema 99")
    assert "the vtlab version that wrote the run" in (err.fix or "")


def test_message_lacks_tables(tmp_path: Path) -> None:
    sqlite_edit(good_store(tmp_path), "DROP TABLE lab_events")
    err = refusal(tmp_path)
    assert err.problem.startswith("the evidence store lacks what this vtlab reads (table lab_events)")


def test_message_cannot_open_simulated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated with a patched sqlite3.connect: a store SQLite refuses to open at all."""
    good_store(tmp_path)

    def refuse(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(sqlite3, "connect", refuse)
    err = refusal(tmp_path)
    assert err.problem == "the evidence store cannot be opened: unable to open database file"
