"""Start the reference lab as a subprocess and talk to it: what the harness calls.

with LabProcess(LabConfig(devices={...}), run_dir / "lab") as lab:
    lab.broker_url            # mqtt://127.0.0.1:PORT
    lab.set_faults("drop=0.1,seed=3")
    lab.ledger()              # list of ledger dicts so far
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness.errors import InputError, TargetError
from harness.faults import FaultSpec, parse_faults
from harness.lab.config import LabConfig
from harness.protocols.wire_json import LabControl, encode
from harness.transports.mqtt import MqttClient, MqttSettings

__all__ = ["LabProcess"]

_ROOT = Path(__file__).resolve().parents[2]


class LabProcess:
    """The reference lab (`python -m harness.lab`) and its broker, for the life of a `with` block.

    The lab stops when this process dies (its stdin pipe closes), so no orphan survives a crash. The lab
    deletes `config.pki_dir` when it exits; stop() deletes it too (in case the lab was killed), and with
    remove_workdir=True also the work folder (for `vtlab lab`, whose folder is no run's evidence).
    """

    def __init__(
        self,
        config: LabConfig,
        workdir: Path,
        *,
        ready_timeout_s: float = 20.0,
        remove_workdir: bool = False,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.remove_workdir = remove_workdir
        updates: dict[str, Any] = {}
        if config.ledger is None:
            updates["ledger"] = self.workdir / "ledger.jsonl"
        if config.log is None:
            updates["log"] = self.workdir / "lab.log"
        self.config = config.model_copy(update=updates) if updates else config
        self.ready_timeout_s = ready_timeout_s
        self.broker_url: str = ""
        self.broker_kind: str = ""
        self.mqtt_version: str = self.config.broker.mqtt_version
        self.access_control: str = "none"
        """How the broker enforces per-identity topics: dynsec, acl_file, amqtt-acl or none."""
        self.pid: int | None = None
        self.broker_pid: int | None = None
        self.ingress: dict[str, str] = {}
        """Where devices send over other protocols than MQTT: {"dc09": "HOST:PORT", "scaip": "HOST:PORT"},
        each port taking TCP and UDP (from the lab's ready line)."""
        self._control: MqttClient | None = None
        self._control_lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        self._stderr_path = self.workdir / "lab.stderr"

    @property
    def ledger_path(self) -> Path:
        assert self.config.ledger is not None
        return self.config.ledger

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg_path = self.workdir / "lab.json"
        cfg_path.write_text(self.config.to_json())
        env = dict(os.environ)
        env["PYTHONPATH"] = str(_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with self._stderr_path.open("wb") as err:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "harness.lab",
                    "--config",
                    str(cfg_path),
                    "--exit-on-stdin-eof",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop the lab
            )
        self._reader = threading.Thread(target=self._read_stdout, name="lab-stdout", daemon=True)
        self._reader.start()
        first = self._wait_event(lambda e: "ready" in e, self.ready_timeout_s)
        if first is None:
            tail = self.stderr_tail()
            self.stop()
            raise TargetError(
                f"the reference lab did not become ready within {self.ready_timeout_s:g}s"
                + (f"; its stderr ends:\n{tail}" if tail else ""),
                fix=f"read {self._stderr_path} and {self.config.log}",
            )
        if not first.get("ready"):
            self.stop()
            raise TargetError(
                f"the reference lab failed to start: {first.get('error')}",
                fix=f"read {self._stderr_path} and {self.config.log}",
            )
        self.broker_url = str(first["broker"])
        self.broker_kind = str(first["broker_kind"])
        self.mqtt_version = str(first.get("mqtt_version", self.mqtt_version))
        self.access_control = str(first.get("access_control", "none"))
        self.pid = int(first["pid"])
        self.broker_pid = int(first["broker_pid"]) if first.get("broker_pid") else None
        ingress = first.get("ingress")
        self.ingress = {str(k): str(v) for k, v in ingress.items()} if isinstance(ingress, dict) else {}
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._control_lock:
            control, self._control = self._control, None
        if control is not None:
            control.close()
        proc = self._proc
        if proc is None:
            self._cleanup()
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if proc.stdin is not None:
            proc.stdin.close()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if proc.stdout is not None:
            proc.stdout.close()
        self._cleanup()

    def _cleanup(self) -> None:
        if self.config.pki_dir is not None:
            shutil.rmtree(self.config.pki_dir, ignore_errors=True)
        if self.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ observation

    def stderr_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self._stderr_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def ledger(self) -> list[dict[str, Any]]:
        """Every ledger line written so far (complete lines only: the lab may be half way through the last)."""
        try:
            text = self.ledger_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        complete = text[: text.rfind("\n") + 1]
        return [json.loads(line) for line in complete.splitlines() if line.strip()]

    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            return list(self._events)

    def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(event, dict):
                with self._cond:
                    self._events.append(event)
                    self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()  # EOF: the lab exited

    def _wait_event(self, match: Any, timeout_s: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout_s
        seen = 0
        with self._cond:
            while True:
                for e in self._events[seen:]:
                    if match(e):
                        return e
                seen = len(self._events)
                left = deadline - time.monotonic()
                if left <= 0 or (self._proc is not None and self._proc.poll() is not None and not self._reader_alive()):
                    return None
                self._cond.wait(timeout=min(left, 0.5))

    def _reader_alive(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    # ------------------------------------------------------------------ control

    def set_faults(self, spec: str | FaultSpec, *, timeout_s: float = 5.0) -> FaultSpec:
        """Replace the lab's active faults; returns once the lab confirms (it writes a ledger line).

        Sent on the control topic as identity `harness`, the only identity the broker lets write there."""
        parsed = spec if isinstance(spec, FaultSpec) else parse_faults(spec, "set_faults")
        if not self.alive:
            raise TargetError(
                "the reference lab is not running",
                fix="start it (use LabProcess as a context manager)",
            )
        request_id = uuid.uuid4().hex
        # "no faults" is spelt `seed=0`: the wire codec refuses an empty `faults` field
        payload = encode(LabControl(faults=str(parsed) or "seed=0", id=request_id))
        self._control_client().publish(self.config.topic("lab_control"), payload)
        reply = self._wait_event(lambda e: e.get("id") == request_id, timeout_s)
        if reply is None:
            raise TargetError(
                f"the reference lab did not confirm the faults `{parsed}` within {timeout_s:g}s"
                + (f"; its stderr ends:\n{self.stderr_tail()}" if not self.alive else ""),
                fix=f"read {self.config.log}",
            )
        if reply.get("event") != "faults":
            raise InputError(str(reply.get("error")), place="set_faults")
        return parsed

    def control_settings(self) -> MqttSettings:
        """How the harness's control client (identity `harness`) reaches the lab's broker."""
        tls = self.config.broker.tls
        return MqttSettings(
            url=self.broker_url,
            version=self.mqtt_version,
            ca=tls.ca if tls else None,
            cert=tls.control_cert if tls else None,
            key=tls.control_key if tls else None,
        )

    def _control_client(self) -> MqttClient:
        with self._control_lock:
            if self._control is None:
                client = MqttClient(self.control_settings(), "lab-control")
                client.connect()
                self._control = client
            return self._control
