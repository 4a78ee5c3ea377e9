"""What the reference lab records in the patient record, as a platform does through VKP: FHIR Bundles pushed
over HTTPS with a HelseID-shaped token (client credentials, private_key_jwt).

Pushes run on one worker thread (HTTP is blocking), at most `limits.pending_pushes` waiting; every push is
a ledger line `epj_push` with the HTTP status (refusals too, with the OperationOutcome's diagnostics), and a
push that could not be made is `epj_failed`. Nothing secret (token, key) reaches the ledger or the log.

Every record is also kept in the lab's own FHIR API when it has one (harness.lab.fhir_api); with no push
target (the pull pattern) that is all, and the ledger line is `epj_recorded`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from harness.lab.config import EpjTarget
from harness.lab.fhir_api import LabFhirApi
from harness.probes.epj import ClientKey, HelseIdTokenProvider, TokenError, push_bundle
from harness.protocols import vkp
from harness.protocols.vkp import DEFAULT_CODES, Ident

__all__ = ["EpjPusher", "Record"]

log = logging.getLogger("harness.lab.epj")

Build = Callable[[Ident, Ident, vkp.CodeTables], dict[str, Any]]
"""(patient, device, codes) -> Bundle"""
Write = Callable[..., None]


class Record:
    """One thing to record: its kind (handled_alarm, low_battery, ...), whose, and how to build the Bundle."""

    __slots__ = ("build", "device", "fields", "kind", "user")

    def __init__(self, kind: str, device: str, user: str | None, build: Build, **fields: Any) -> None:
        self.kind = kind
        self.device = device
        self.user = user
        self.build = build
        self.fields = fields


class EpjPusher:
    def __init__(self, target: EpjTarget, write: Write, *, limit: int, api: LabFhirApi | None = None) -> None:
        self.target = target
        self._write = write
        self._api = api
        self.codes = DEFAULT_CODES.with_alert_codes(target.alert_codes)
        self._tokens: HelseIdTokenProvider | None = None
        if target.pushes:
            assert target.token_url and target.client_id and target.client_key  # checked by EpjTarget
            client = ClientKey(target.client_id, target.client_key, tuple(target.scopes))
            self._tokens = HelseIdTokenProvider(target.token_url, client, ca=target.ca, scopes=target.scopes)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lab-epj")
        self._limit = limit
        self._pending = 0
        self._lock = threading.Lock()
        self._closed = False

    def alarm_code(self, contact_id: str) -> str | None:
        """The VKP alert code of a handled alarm with this Contact ID code (None: not recorded)."""
        return self.target.alarm_codes.get(contact_id) or self.target.alarm_codes.get("*")

    def submit(self, record: Record) -> None:
        """Queue one push (a ledger line `rejected` when too many wait)."""
        with self._lock:
            if self._closed:
                return
            if self._pending >= self._limit:
                self._write(
                    "epj_failed",
                    kind=record.kind,
                    device=record.device,
                    reason=f"{self._pending} pushes already wait",
                    **record.fields,
                )
                return
            self._pending += 1
        try:
            self._pool.submit(self._push, record)
        except RuntimeError:  # shut down meanwhile
            with self._lock:
                self._pending -= 1

    def _push(self, record: Record) -> None:
        try:
            self._push_one(record)
        except Exception as exc:  # a push must never take the lab down
            log.exception("EPJ push failed")
            self._write(
                "epj_failed", kind=record.kind, device=record.device, reason=f"internal error: {exc!r}", **record.fields
            )
        finally:
            with self._lock:
                self._pending -= 1

    def _push_one(self, record: Record) -> None:
        line: dict[str, Any] = {"kind": record.kind, "device": record.device, **record.fields}
        patient_id = self.target.patient_id(record.user)
        if patient_id is None:
            self._write("epj_failed", **line, reason="no user (patient) known for the device")
            return
        patient = Ident(self.target.patient_system, patient_id)
        device = Ident(vkp.DEVICE_SYSTEM, record.device)
        try:
            bundle = record.build(patient, device, self.codes)
        except (ValueError, KeyError) as exc:
            self._write("epj_failed", **line, reason=f"could not build the FHIR Bundle: {exc}")
            return
        line["patient"] = patient_id
        line["resources"] = [e["resource"]["resourceType"] for e in bundle.get("entry", [])]
        if self._api is not None:
            self._api.record(bundle)
        if self._tokens is None:
            self._write("epj_recorded", **line, api=self._api is not None)
            return
        started = time.monotonic_ns()
        try:
            result = push_bundle(
                self.target.fhir_url,
                bundle,
                self._tokens if self.target.send_token else None,
                self.target.ca,
                timeout_s=self.target.timeout_s,
            )
        except TokenError as exc:
            self._write("epj_failed", **line, status=exc.status, reason=f"token refused: {exc.error}")
            return
        except OSError as exc:
            self._write("epj_failed", **line, reason=f"unreachable: {exc}")
            return
        self._write(
            "epj_push",
            **line,
            status=result.status,
            ok=result.ok,
            ms=round((result.answered_ns - started) / 1e6, 3),
            **({"diagnostics": result.diagnostics[:5]} if not result.ok else {}),
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)


def utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
