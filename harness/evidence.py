"""The run's append-only evidence store: one SQLite file per run, written as things happen.

A run killed half-way keeps every row it committed; `vtlab report` rebuilds the summary from this file
alone. Times: `t_ns` is the harness's monotonic clock (comparable within one run only), `wall` is UTC.
"""

from __future__ import annotations

import itertools
import json
import queue
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.outcomes import Outcome

EVIDENCE_FILE = "evidence.sqlite"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS run (
    run_id TEXT PRIMARY KEY, started TEXT NOT NULL, ended TEXT, status TEXT NOT NULL,
    info TEXT NOT NULL            -- JSON: lab, contract, versions, machine, clock, faults, argv ...
);
CREATE TABLE IF NOT EXISTS files (   -- inputs the run used, with their text, so reports need nothing else
    role TEXT NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (role, path)
);
CREATE TABLE IF NOT EXISTS scenarios (
    id TEXT PRIMARY KEY, file TEXT NOT NULL, title TEXT NOT NULL, covers TEXT NOT NULL,
    definition TEXT NOT NULL,     -- JSON: devices, steps, repeat, pace, criteria as loaded
    started TEXT NOT NULL, ended TEXT, status TEXT NOT NULL, detail TEXT
);
CREATE TABLE IF NOT EXISTS stimuli (
    id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, cid TEXT NOT NULL, device TEXT NOT NULL,
    event TEXT NOT NULL, seq INTEGER NOT NULL, iteration INTEGER NOT NULL,
    t_ns INTEGER NOT NULL, wall TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS stimuli_cid ON stimuli (cid);
CREATE TABLE IF NOT EXISTS arrivals (
    id INTEGER PRIMARY KEY, scenario TEXT, cid TEXT, probe TEXT NOT NULL, kind TEXT NOT NULL,
    t_ns INTEGER NOT NULL, wall TEXT NOT NULL, payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS arrivals_cid ON arrivals (cid);
CREATE TABLE IF NOT EXISTS acks (       -- acknowledgements sent by a response-centre probe
    id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, cid TEXT NOT NULL, probe TEXT NOT NULL,
    t_ns INTEGER NOT NULL, wall TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, iteration INTEGER NOT NULL, step INTEGER NOT NULL,
    kind TEXT NOT NULL, outcome TEXT NOT NULL, detail TEXT, t_ns INTEGER NOT NULL, wall TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS observations (  -- tester notes, manual checks, skipped steps with reasons
    id INTEGER PRIMARY KEY, scenario TEXT, kind TEXT NOT NULL, author TEXT, text TEXT NOT NULL,
    wall TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lab_events (    -- what the reference lab says it did (its fault ledger)
    id INTEGER PRIMARY KEY, scenario TEXT, cid TEXT, device TEXT, action TEXT NOT NULL,
    detail TEXT NOT NULL, wall TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, requirement TEXT NOT NULL, metric TEXT NOT NULL,
    statistic TEXT NOT NULL, limit_text TEXT NOT NULL, measured REAL, unit TEXT NOT NULL,
    verdict TEXT NOT NULL, detail TEXT NOT NULL, wall TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS matches (     -- an expectation met (or not): the basis of every metric
    id INTEGER PRIMARY KEY, scenario TEXT NOT NULL, iteration INTEGER NOT NULL, step INTEGER NOT NULL,
    metric TEXT NOT NULL, stimulus_cid TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL,
    arrival_id INTEGER, latency_ns INTEGER, outcome TEXT NOT NULL,  -- harness.outcomes.Outcome
    detail TEXT, wall TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class Match:
    """One expectation met or not: which stimulus, which arrival (if any), how long, what happened."""

    scenario: str
    iteration: int
    step: int
    metric: str
    stimulus_cid: str
    device: str
    seq: int
    outcome: Outcome
    arrival_id: int | None = None
    latency_ns: int | None = None
    detail: str | None = None


def utc_now() -> str:
    """UTC wall-clock time for people, ISO 8601 with milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


class EvidenceStore:
    """Writer. Rows are committed by a writer thread as soon as it gets them (in small batches), so a
    killed run keeps all but the last few milliseconds, and no caller waits on the disk.

    Probes call it from their transport threads: a write only enqueues, so an SQLite checkpoint (which
    syncs to disk and can take milliseconds) never delays the stamping of the next arrival.
    `flush()` waits until everything queued so far is committed (before reading the store back).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._arrival_ids = itertools.count(1)
        self._queue: queue.SimpleQueue[tuple[str, tuple[Any, ...]] | threading.Event | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._drain, name="evidence-writer", daemon=True)
        self._writer.start()
        self.write_errors: list[str] = []

    @classmethod
    def create(cls, run_dir: Path) -> EvidenceStore:
        return cls(run_dir / EVIDENCE_FILE)

    def _write(self, sql: str, params: tuple[Any, ...]) -> None:
        self._queue.put((sql, params))

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < 500:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            done: list[threading.Event] = []
            stop = False
            with self._lock:
                self._db.execute("BEGIN")
                for item in batch:
                    if item is None:
                        stop = True
                    elif isinstance(item, threading.Event):
                        done.append(item)
                    else:
                        try:
                            self._db.execute(*item)
                        except sqlite3.Error as exc:  # a bad row must not lose the others
                            self.write_errors.append(f"{exc}: {item[0][:60]}")
                self._db.execute("COMMIT")
            for event in done:
                event.set()
            if stop:
                return

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until every row written so far is committed."""
        if not self._writer.is_alive():
            return
        event = threading.Event()
        self._queue.put(event)
        event.wait(timeout_s)

    def close(self) -> None:
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout=30)
        with self._lock:
            self._db.close()

    # --- the run ---------------------------------------------------------------------------
    def run_started(self, run_id: str, info: Mapping[str, Any]) -> None:
        self._write(
            "INSERT INTO run (run_id, started, status, info) VALUES (?, ?, 'running', ?)",
            (run_id, utc_now(), _dump(info)),
        )

    def run_info_update(self, **extra: Any) -> None:
        self.flush()
        with self._lock:
            (info,) = self._db.execute("SELECT info FROM run").fetchone()
            merged = {**json.loads(info), **extra}
            self._db.execute("UPDATE run SET info = ?", (_dump(merged),))

    def run_ended(self, status: str = "completed") -> None:
        self._write("UPDATE run SET ended = ?, status = ?", (utc_now(), status))

    def input_file(self, role: str, path: str, sha256: str, text: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO files (role, path, sha256, text) VALUES (?, ?, ?, ?)",
            (role, path, sha256, text),
        )

    # --- scenarios ---------------------------------------------------------------------------
    def scenario_started(
        self, scenario: str, file: str, title: str, covers: list[str], definition: Mapping[str, Any]
    ) -> None:
        self._write(
            "INSERT OR REPLACE INTO scenarios (id, file, title, covers, definition, started, status)"
            " VALUES (?, ?, ?, ?, ?, ?, 'running')",
            (scenario, file, title, _dump(covers), _dump(definition), utc_now()),
        )

    def scenario_ended(self, scenario: str, status: str, detail: str | None = None) -> None:
        self._write(
            "UPDATE scenarios SET ended = ?, status = ?, detail = ? WHERE id = ?",
            (utc_now(), status, detail, scenario),
        )

    def stimulus(
        self,
        scenario: str,
        cid: str,
        device: str,
        event: str,
        seq: int,
        iteration: int,
        t_ns: int,
        payload: Mapping[str, Any],
    ) -> None:
        self._write(
            "INSERT INTO stimuli (scenario, cid, device, event, seq, iteration, t_ns, wall, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (scenario, cid, device, event, seq, iteration, t_ns, utc_now(), _dump(payload)),
        )

    def arrival(
        self,
        scenario: str | None,
        cid: str | None,
        probe: str,
        kind: str,
        t_ns: int,
        payload: Mapping[str, Any] | str,
    ) -> int:
        """Record what a probe received (raw `cid` as sent by the platform); returns the row id, which
        is assigned here (in arrival order) so the caller need not wait for the disk."""
        body = payload if isinstance(payload, str) else _dump(payload)
        row_id = next(self._arrival_ids)
        self._write(
            "INSERT INTO arrivals (id, scenario, cid, probe, kind, t_ns, wall, payload)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, scenario, cid, probe, kind, t_ns, utc_now(), body),
        )
        return row_id

    def ack_sent(self, scenario: str, cid: str, probe: str, t_ns: int) -> None:
        self._write(
            "INSERT INTO acks (scenario, cid, probe, t_ns, wall) VALUES (?, ?, ?, ?, ?)",
            (scenario, cid, probe, t_ns, utc_now()),
        )

    def step(
        self,
        scenario: str,
        iteration: int,
        step: int,
        kind: str,
        outcome: str,
        detail: str | None,
        t_ns: int,
    ) -> None:
        self._write(
            "INSERT INTO steps (scenario, iteration, step, kind, outcome, detail, t_ns, wall)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (scenario, iteration, step, kind, outcome, detail, t_ns, utc_now()),
        )

    def observation(self, scenario: str | None, kind: str, text: str, author: str | None = None) -> None:
        self._write(
            "INSERT INTO observations (scenario, kind, author, text, wall) VALUES (?, ?, ?, ?, ?)",
            (scenario, kind, author, text, utc_now()),
        )

    def lab_event(self, scenario: str | None, line: Mapping[str, Any]) -> None:
        self._write(
            "INSERT INTO lab_events (scenario, cid, device, action, detail, wall)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                scenario,
                line.get("cid"),
                line.get("device"),
                str(line.get("action", "?")),
                _dump(line),
                str(line.get("t") or utc_now()),
            ),
        )

    def match(self, m: Match) -> None:
        """Record what happened to one expectation (the basis of every metric)."""
        self._write(
            "INSERT INTO matches (scenario, iteration, step, metric, stimulus_cid, device, seq,"
            " arrival_id, latency_ns, outcome, detail, wall) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (m.scenario, m.iteration, m.step, m.metric, m.stimulus_cid, m.device, m.seq, m.arrival_id,
             m.latency_ns, m.outcome.value, m.detail, utc_now()),
        )

    def harness_fault(self, scenario: str | None, text: str) -> None:
        """A failure of vtlab's own part (its device, probe, broker or lab): makes the scenario incomplete."""
        self.observation(scenario, "harness_fault", text)

    def verdict(
        self,
        scenario: str,
        requirement: str,
        metric: str,
        statistic: str,
        limit_text: str,
        measured: float | None,
        unit: str,
        verdict: str,
        detail: str,
    ) -> None:
        self._write(
            "INSERT INTO verdicts (scenario, requirement, metric, statistic, limit_text, measured,"
            " unit, verdict, detail, wall) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (scenario, requirement, metric, statistic, limit_text, measured, unit, verdict, detail, utc_now()),
        )


@dataclass(frozen=True, slots=True)
class ScenarioRecord:
    id: str
    file: str
    title: str
    covers: list[str]
    definition: dict[str, Any]
    started: str
    ended: str | None
    status: str
    detail: str | None


def open_evidence_for_reading(path: Path) -> tuple[sqlite3.Connection, Path | None]:
    """Open a run's evidence store for reading without changing or adding a file beside it, or raise
    InputError (exit 2) naming the file when it is not a readable vtlab evidence store.

    SQLite's `mode=ro` alone is not enough: on a WAL-mode store it creates -wal and -shm files, and
    `immutable=1` alone would ignore the rows still in the WAL of a running or killed run. So:
    - no -wal beside the store (a run that ended): `immutable=1`, nothing is locked or created;
    - -wal and -shm beside it (a run still writing, or killed): `mode=ro` through the existing shared-memory
      index, which sees every committed row and creates nothing;
    - a -wal without its -shm (a copied folder): the store and its WAL are copied into a private temporary
      folder and read there (the second value returned; the caller removes it when done).
    The store is checked whole (`PRAGMA quick_check`) and against the tables this vtlab writes, so a
    truncated or foreign file is refused here rather than failing half-way through a report.
    """
    import os
    import shutil
    import stat
    import tempfile
    from urllib.parse import quote

    from harness.errors import InputError

    again = "rerun the scenarios into a new run folder (a damaged store cannot be repaired by vtlab)"

    def refuse(problem: str, fix: str = again, where: Path = path) -> InputError:
        return InputError(problem, place=str(where), fix=fix)

    def regular(file: Path, required: bool) -> bool:
        try:
            mode = os.stat(file).st_mode
        except FileNotFoundError:
            if required:
                raise refuse(
                    "no evidence store here", "give the folder of a run vtlab wrote, e.g. reports/latest"
                ) from None
            return False
        except OSError as exc:
            raise refuse(f"the evidence store cannot be read: {exc.strerror or exc}", where=file) from None
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "a special file"
            raise refuse(f"{file.name} is {kind}, not a file: this is not an evidence store vtlab wrote", where=file)
        return True

    regular(path, required=True)
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as exc:
        raise refuse(f"the evidence store cannot be read: {exc.strerror or exc}") from None
    if not header:
        raise refuse("the evidence store is empty (0 bytes): the run wrote nothing into it")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    sqlite_header = header.startswith(b"SQLite format 3\x00") and len(header) == 100
    if not sqlite_header or page_size not in {2**n for n in range(9, 17)}:
        raise refuse("this is not an SQLite database, so not an evidence store vtlab wrote (damaged or replaced)")

    wal, shm, journal = (Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal"))
    copy: Path | None = None
    target = path
    if regular(wal, required=False):
        if not regular(shm, required=False):
            copy = Path(tempfile.mkdtemp(prefix="vtlab-evidence-"))
            target = copy / path.name
            try:
                shutil.copyfile(path, target)
                shutil.copyfile(wal, Path(f"{target}-wal"))
            except OSError as exc:
                shutil.rmtree(copy, ignore_errors=True)
                raise refuse(f"the evidence store cannot be read: {exc.strerror or exc}") from None
        uri = f"file:{quote(str(target.resolve()))}?mode=ro"
    elif regular(journal, required=False):
        uri = f"file:{quote(str(path.resolve()))}?mode=ro"  # not immutable: let SQLite see the journal
    else:
        # An ended run's store is whole pages, as many as its header says. SQLite would read the missing end of
        # a cut-short file as zeros, which pass its integrity check as rows of empty text.
        pages = int.from_bytes(header[28:32], "big") if header[92:96] == header[24:28] else 0
        size = path.stat().st_size
        if size % page_size or size < pages * page_size:
            raise refuse(
                f"the evidence store is cut short: {size} bytes, where its header says {pages} pages of {page_size}"
                f" bytes ({pages * page_size} bytes); the end of the file is lost (a full disk or a broken copy?)"
            )
        uri = f"file:{quote(str(path.resolve()))}?mode=ro&immutable=1"

    def cleanup() -> None:
        if copy is not None:
            shutil.rmtree(copy, ignore_errors=True)

    try:
        db = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        cleanup()
        raise refuse(f"the evidence store cannot be opened: {' '.join(str(exc).split())[:200]}") from None
    db.text_factory = lambda raw: raw.decode("utf-8", "replace")  # damaged names must not stop the checks
    try:
        check = [line for row in db.execute("PRAGMA quick_check(5)") for line in str(row[0]).splitlines()]
        if check != ["ok"]:
            found_problems = "; ".join(line for line in check if not line.startswith("***"))
            raise refuse(f"the evidence store is damaged (SQLite integrity check: {found_problems[:300]})")
        (version,) = db.execute("PRAGMA user_version").fetchone()
        found = {
            name: {col[1] for col in db.execute(f"PRAGMA table_info('{name}')")}
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
            if "'" not in name
        }
        expected_db = sqlite3.connect(":memory:")
        try:
            expected_db.executescript(_SCHEMA)
            expected = {
                name: {col[1] for col in expected_db.execute(f"PRAGMA table_info('{name}')")}
                for (name,) in expected_db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            expected_db.close()
        if "run" not in found or not {"scenarios", "stimuli"} & found.keys():
            raise refuse(
                "this SQLite file is not a vtlab evidence store (it has none of the tables a run writes: "
                f"{', '.join(sorted(expected))})",
                "give the folder of a run vtlab wrote, e.g. reports/latest",
            )
        if version > SCHEMA_VERSION:
            raise refuse(
                f"the evidence store was written by a newer vtlab (schema {version}; this vtlab reads "
                f"{SCHEMA_VERSION})",
                "read it with the vtlab version that wrote the run (summary.json names it)",
            )
        missing = [f"table {t}" for t in sorted(expected.keys() - found.keys())]
        missing += [f"{t}.{c}" for t in sorted(expected.keys() & found.keys()) for c in sorted(expected[t] - found[t])]
        if missing:
            raise refuse(
                f"the evidence store lacks what this vtlab reads ({', '.join(missing[:8])}); it was written "
                "by another vtlab version, or altered",
                "read it with the vtlab version that wrote the run, or rerun the scenarios",
            )
    except (sqlite3.Error, UnicodeDecodeError) as exc:  # SQLite's message can quote damaged bytes
        db.close()
        cleanup()
        reason = " ".join(str(exc).split())[:200] if isinstance(exc, sqlite3.Error) else "damaged bytes"
        raise refuse(f"the evidence store cannot be read: {reason}") from None
    except InputError:
        db.close()
        cleanup()
        raise
    db.text_factory = str
    return db, copy


class EvidenceReader:
    """Read-only view of a run's store; works on a store whose run was killed half-way."""

    def __init__(self, path: Path):
        if path.is_dir():
            path = path / EVIDENCE_FILE
        self.path = path
        self._db, self._copy = open_evidence_for_reading(path)
        self._db.row_factory = sqlite3.Row

    def close(self) -> None:
        self._db.close()
        if self._copy is not None:
            import shutil

            shutil.rmtree(self._copy, ignore_errors=True)
            self._copy = None

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return list(self._db.execute(sql, params))

    def run(self) -> dict[str, Any]:
        row = self._db.execute("SELECT * FROM run").fetchone()
        if row is None:
            return {"run_id": self.path.parent.name, "started": None, "ended": None, "status": "empty", "info": {}}
        return {**dict(row), "info": json.loads(row["info"])}

    def files(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.rows("SELECT * FROM files ORDER BY role, path")]

    def scenarios(self) -> list[ScenarioRecord]:
        return [
            ScenarioRecord(
                id=r["id"],
                file=r["file"],
                title=r["title"],
                covers=json.loads(r["covers"]),
                definition=json.loads(r["definition"]),
                started=r["started"],
                ended=r["ended"],
                status=r["status"],
                detail=r["detail"],
            )
            for r in self.rows("SELECT * FROM scenarios ORDER BY started, id")
        ]

    def stimuli(self, scenario: str) -> Iterator[sqlite3.Row]:
        yield from self._db.execute("SELECT * FROM stimuli WHERE scenario = ? ORDER BY id", (scenario,))

    def arrivals(self, scenario: str) -> Iterator[sqlite3.Row]:
        yield from self._db.execute("SELECT * FROM arrivals WHERE scenario = ? ORDER BY id", (scenario,))

    def acks(self, scenario: str) -> Iterator[sqlite3.Row]:
        yield from self._db.execute("SELECT * FROM acks WHERE scenario = ? ORDER BY id", (scenario,))

    def matches(self, scenario: str) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM matches WHERE scenario = ? ORDER BY id", (scenario,))

    def verdicts(self) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM verdicts ORDER BY id")

    def steps(self, scenario: str) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM steps WHERE scenario = ? ORDER BY id", (scenario,))

    def observations(self) -> list[sqlite3.Row]:
        return self.rows("SELECT * FROM observations ORDER BY id")

    def lab_events(self, scenario: str | None = None) -> list[sqlite3.Row]:
        if scenario is None:
            return self.rows("SELECT * FROM lab_events ORDER BY id")
        return self.rows("SELECT * FROM lab_events WHERE scenario = ? ORDER BY id", (scenario,))
