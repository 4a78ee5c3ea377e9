"""PatientRecordProbe: stands where the contract says events must reach the patient record (EPJ), as the
national welfare-technology hub (VKP) would, and hands every FHIR resource the platform pushes to the
tracker as a `record` arrival, stamped on the HTTPS handler thread.

The endpoint itself (FHIR R4 over HTTPS, HelseID-shaped private_key_jwt tokens, OperationOutcome on
refusal) is harness.probes.epj.EpjProbe; this adds the per-run TLS certificate, the platform's client
registration, and the translation to protocol-neutral arrivals.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.links import Incoming, Refused
from harness.pki import make_pki
from harness.probes.epj import ClientKey, EpjProbe, RequestSummary
from harness.protocols.vkp import DEFAULT_CODES, ResourceSummary, scope_for
from harness.tracking import Tracker

WRITE_SCOPES = tuple(scope_for(t, "write") for t in
                     ("Bundle", "DetectedIssue", "Encounter", "Composition", "MedicationDispense", "Observation"))


@dataclass(frozen=True, slots=True)
class RecordEndpoint:
    """What a platform needs to push to this probe (the embedded lab gets it in its config)."""

    settings: Any  # the lab file's EpjSettings (codes the platform is to use)
    base_url: str
    token_url: str
    ca: Path
    orgnr: str
    client: ClientKey | None  # the platform's generated client (embedded lab); None: registered from the lab file


def fields_of(s: ResourceSummary) -> dict[str, Any]:
    return {
        "resource": s.resource_type, "kind": s.kind, "id": s.id,
        "patient": s.patient.value if s.patient else None,
        "device": s.device.value if s.device else None,
        "code": s.code, "code_system": s.code_system, "display": s.display, "severity": s.severity,
        "status": s.status, "time": s.time.isoformat() if s.time else None,
        "readings": [{"loinc": r.loinc, "value": str(r.value), "unit": r.unit} for r in s.readings],
        "note": s.note, "orgnr": s.orgnr,
        "findings": [f"{f.code} at {f.path}: {f.message}" for f in s.findings],
    }


class PatientRecordProbe:
    def __init__(self, name: str, settings: Any, lab_dir: Path, tracker: Tracker) -> None:
        self.name = name
        self.settings = settings
        self._tracker = tracker
        self._dir = Path(tempfile.mkdtemp(prefix="vtlab-epj-tls-"))
        pki = make_pki(self._dir, clients=(), keep_ca_key=False)
        self.ca = pki.ca_cert
        host, _, port = (settings.listen or "127.0.0.1:0").rpartition(":")
        self.orgnr = settings.orgnr
        self._probe = EpjProbe(certfile=pki.server_cert, keyfile=pki.server_key, orgnrs=[settings.orgnr],
                               on_resource=self._on_resource, on_refused=self._on_refused, host=host,
                               port=int(port), strict=settings.strict, name=name,
                               codes=DEFAULT_CODES.with_alert_codes(settings.alert_codes))
        for client_id, key_file in settings.clients.items():
            self._probe.register_client(client_id, (lab_dir / key_file).read_bytes(), WRITE_SCOPES)
        self._platform: ClientKey | None = None
        self.accepted = 0

    def endpoint(self, generate_client: bool) -> RecordEndpoint:
        """Where to push, and (for the embedded lab) a freshly generated client key to push with."""
        if generate_client and self._platform is None:
            self._platform = self._probe.new_client("vtlab-reference-lab", WRITE_SCOPES)
        return RecordEndpoint(self.settings, self._probe.base_url(self.orgnr), self._probe.token_url, self.ca,
                              self.orgnr, self._platform)

    def start(self) -> None:
        self._probe.start()

    def _on_resource(self, summary: ResourceSummary, arrived_ns: int) -> None:
        fields = fields_of(summary)
        self.accepted += 1
        self._tracker.on_incoming(self.name, "record", Incoming(
            arrived_ns, fields, defect="; ".join(fields["findings"]) or None, evidence=fields,
            where=f"{summary.path}", carries=("patient", "device", "code", "readings")))

    def _on_refused(self, request: RequestSummary, status: int, reason: str) -> None:
        self._tracker.on_refused(self.name, Refused(request.arrived_ns, f"{request.method} {request.path}",
                                                    f"HTTP {status}: {reason}", f"epj client {request.client_id}"))

    def close(self) -> None:
        self._probe.close()
        shutil.rmtree(self._dir, ignore_errors=True)
