"""EpjProbe: a VKP-shaped patient-record endpoint (FHIR R4 over HTTPS, HelseID-style OAuth2) that observes
what a platform records, plus the pull-mode `EpjPoller` and the lab side's `push_bundle`.

Push: the platform POSTs a Bundle to `<base>/epj/r4/<orgnr>/` (or one resource to `.../<Resource>`) with a
bearer token it got from `POST /connect/token` (client credentials, private_key_jwt). The probe stamps the
request with the harness clock first thing on the handling thread, checks the token, validates the FHIR
(fhir.resources models; VKP codes, patient, units as findings), answers as a FHIR server would, and hands
each accepted resource to `on_resource(summary, arrived_ns)`. Every refusal goes to
`on_refused(request, status, reason)`. Tokens, assertions and keys never reach a callback or a log line.

Pull: VKP has no FHIR Subscription, so a platform that keeps records may be polled by search instead;
`EpjPoller` does that and hands new resources (each exactly once) to the same callback. The probe serves
searches over what it stored, so a lab can stand in for a supplier's API.

Stdlib http.server on its own thread; TLS from certificate/key files; keys generated per run in a
temporary folder that `close()` deletes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import heapq
import http.client
import itertools
import json
import logging
import re
import shutil
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from harness.protocols import vkp
from harness.protocols.base import ProtocolError
from harness.protocols.vkp import (
    DEFAULT_CODES,
    FHIR_JSON,
    MAX_FHIR_BYTES,
    AccessClaims,
    CodeTables,
    FhirError,
    OAuthError,
    PublicKey,
    ResourceSummary,
)

__all__ = [
    "AccessToken",
    "ClientKey",
    "EpjPoller",
    "EpjProbe",
    "FhirStore",
    "HelseIdTokenProvider",
    "LocalSetupError",
    "PollFailure",
    "PushResult",
    "RequestSummary",
    "TokenError",
    "fetch_token",
    "fhir_get",
    "push_bundle",
    "redact",
]

log = logging.getLogger("vtlab.probes.epj")

ResourceCallback = Callable[[ResourceSummary, int], None]


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What is known of a refused request, with nothing secret in it (no headers, no query, no body)."""

    method: str
    path: str
    client_id: str | None
    peer: str
    content_length: int | None
    arrived_ns: int


RefusedCallback = Callable[[RequestSummary, int, str], None]


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A HelseID client: its id, the file of its private key, the scopes it may ask for."""

    client_id: str
    private_key: Path
    scopes: tuple[str, ...]
    kid: str | None = None


@dataclass(slots=True)
class _Client:
    client_id: str
    keys: list[PublicKey]
    scopes: frozenset[str]


# ---------------------------------------------------------------------------------------------- store


class FhirStore:
    """Resources kept per organisation, with server-assigned ids and strictly increasing lastUpdated."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._last = datetime.fromtimestamp(0, UTC)
        self._seq = 0

    def add(self, orgnr: str, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Store a copy with a new id, versionId 1 and lastUpdated; returns the stored resource."""
        with self._lock:
            now = datetime.fromtimestamp(self._clock(), UTC)
            if now <= self._last:
                now = self._last + timedelta(microseconds=1)
            self._last = now
            self._seq += 1
            stored = json.loads(vkp.encode(resource))
            stored["id"] = f"vtlab-{self._seq}"
            stored["meta"] = {**stored.get("meta", {}), "versionId": "1", "lastUpdated": _instant(now)}
            self._items.setdefault(orgnr, []).append(stored)
            return stored

    def read(self, orgnr: str, rtype: str, rid: str) -> dict[str, Any] | None:
        with self._lock:
            for r in self._items.get(orgnr, []):
                if r["resourceType"] == rtype and r["id"] == rid:
                    return r
        return None

    def search(
        self,
        orgnr: str,
        rtype: str,
        last_updated: Sequence[tuple[str, datetime]],
        offset: int,
        count: int,
        patient: tuple[str | None, str] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of `rtype` matching every `_lastUpdated` bound (and the patient's identifier, system
        optional), oldest first; and the total."""
        with self._lock:
            items = [r for r in self._items.get(orgnr, []) if r["resourceType"] == rtype]
        matched = [
            r
            for r in items
            if all(_compare(_parse_instant(r["meta"]["lastUpdated"]), p, t) for p, t in last_updated)
            and (patient is None or _about_patient(r, *patient))
        ]
        return matched[offset : offset + count], len(matched)


def _about_patient(resource: Mapping[str, Any], system: str | None, value: str) -> bool:
    """Whether the resource's patient (`patient` or `subject`, a logical reference as VKP writes it) is the
    one with this identifier."""
    ref = resource.get("patient") or resource.get("subject")
    ident = ref.get("identifier") if isinstance(ref, Mapping) else None
    if not isinstance(ident, Mapping) or ident.get("value") != value:
        return False
    return system is None or ident.get("system") == system


def _instant(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _parse_instant(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError("instant without timezone")
    return t


def _compare(value: datetime, prefix: str, bound: datetime) -> bool:
    return {
        "gt": value > bound,
        "ge": value >= bound,
        "lt": value < bound,
        "le": value <= bound,
        "eq": value == bound,
        "ne": value != bound,
    }[prefix]


_ANONYMOUS = AccessClaims("anonymous", frozenset(), 0)
"""Who a request is when the endpoint requires no token (an insecure profile): allowed everything."""
_SEARCH_PARAMS = ("_lastUpdated", "_count", "_offset", "_sort", "patient", "patient:identifier")
_DATE_PARAM = re.compile(r"^(gt|ge|lt|le|eq|ne)?(\d{4}-\d{2}-\d{2}T[0-9:.]+(?:Z|[+-]\d{2}:\d{2}))$")
_DRAIN_LIMIT = 8 * MAX_FHIR_BYTES
_RESOURCE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
_TOKEN_IN_TEXT = re.compile(r"(access_token|client_assertion)=[^&\s\"']*", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- probe


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, body: dict[str, Any], headers: Mapping[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = dict(headers or {})


def _outcome(status: int, code: str, reason: str, expression: str | None = None) -> _Refusal:
    return _Refusal(status, reason, vkp.operation_outcome([("error", code, reason, expression)]))


class EpjProbe:
    """A VKP stand-in: FHIR endpoint per organisation number plus a HelseID-shaped token endpoint.

    `on_resource` and `on_refused` are called one at a time (the probe serialises them), on the thread that
    handled the request. `strict` (default) answers 422 to valid FHIR with VKP findings (unknown code,
    missing patient, wrong unit) as a profile-validating server would; with `strict=False` such resources
    are accepted and their findings travel in the summary.

    `read_only` makes it a platform's own search API (the reference lab's, harness.lab.fhir_api): writes
    are refused with 405. `require_token=False` is the insecure profile's switch: every request is let in
    without a token (a finding for `fhir_without_token`). `max_count` bounds a search page (`_count` above
    it is clamped, as FHIR servers do). `io_timeout_s` bounds each read and write; `request_timeout_s` a
    whole request (a client trickling bytes is cut off, a 408 refusal); `max_connections` how many
    connections are served at once.
    """

    def __init__(
        self,
        *,
        certfile: Path,
        keyfile: Path,
        orgnrs: Iterable[str],
        on_resource: ResourceCallback,
        on_refused: RefusedCallback | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = "/epj/r4",
        codes: CodeTables = DEFAULT_CODES,
        strict: bool = True,
        token_lifetime_s: int = 300,
        clock: Callable[[], float] = time.time,
        io_timeout_s: float = 10.0,
        name: str = "epj",
        read_only: bool = False,
        require_token: bool = True,
        max_count: int = 200,
        request_timeout_s: float = 30.0,
        max_connections: int = 64,
    ) -> None:
        self.name = name
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self.read_only = read_only
        self.require_token = require_token
        self.max_count = max_count
        self.orgnrs = frozenset(orgnrs)
        self.codes = codes
        self.strict = strict
        self.token_lifetime_s = token_lifetime_s
        self.io_timeout_s = io_timeout_s
        self.base_path = "/" + base_path.strip("/")
        self._clock = clock
        self._on_resource = on_resource
        self._on_refused = on_refused
        self._callback_lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._clients_lock = threading.Lock()
        self._jti = vkp.JtiCache()
        self._jti_lock = threading.Lock()
        self.store = FhirStore(clock)
        self.accepted = 0
        self.refused = 0
        self._dir = Path(tempfile.mkdtemp(prefix="vtlab-epj-"))
        self._signing_key = vkp.generate_key("ES256")
        self._kid = "vtlab-epj-1"
        key_path = self._dir / "helseid-signing.key"
        key_path.write_bytes(vkp.private_pem(self._signing_key))
        key_path.chmod(0o600)
        (self._dir / "helseid-signing.pub").write_bytes(vkp.public_pem(self._signing_key))
        self._public_key: PublicKey = self._signing_key.public_key()
        try:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(certfile), str(keyfile))
            self._server = _Server((host, port), _Handler, ctx, self)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)  # no keys left behind when the port or certificate fails
            raise
        self.host: str = str(self._server.server_address[0])
        self.port: int = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None
        self._closed = False

    # -- lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name=f"{self.name}-https", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=10)
        self._server.server_close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- addresses

    @property
    def origin(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def issuer(self) -> str:
        return self.origin

    @property
    def token_url(self) -> str:
        return f"{self.origin}/connect/token"

    @property
    def token_urls(self) -> tuple[str, ...]:
        """The token endpoint as a client may name it in `aud` (by address or as localhost)."""
        return (self.token_url, f"https://localhost:{self.port}/connect/token")

    def base_url(self, orgnr: str) -> str:
        return f"{self.origin}{self.base_path}/{orgnr}"

    @property
    def key_dir(self) -> Path:
        """The per-run folder of generated keys (deleted by close)."""
        return self._dir

    # -- clients and tokens

    def register_client(
        self, client_id: str, public_key: bytes | str | Mapping[str, Any], scopes: Iterable[str]
    ) -> None:
        """Register a client's public key (PEM or JWK) and the scopes it may be granted."""
        key = vkp.public_key_from(public_key)
        with self._clients_lock:
            c = self._clients.get(client_id)
            if c is None:
                self._clients[client_id] = _Client(client_id, [key], frozenset(s.lower() for s in scopes))
            else:
                c.keys.append(key)
                c.scopes = c.scopes | {s.lower() for s in scopes}

    def new_client(
        self, client_id: str, scopes: Iterable[str], *, alg: Literal["ES256", "RS256"] = "ES256"
    ) -> ClientKey:
        """Generate a key pair in the run's key folder, register its public half, return the client."""
        scopes = tuple(scopes)
        key = vkp.generate_key(alg)
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", client_id)
        path = self._dir / f"client-{safe}-{alg}.key"
        path.write_bytes(vkp.private_pem(key))
        path.chmod(0o600)
        self.register_client(client_id, vkp.public_pem(key), scopes)
        return ClientKey(client_id, path, scopes)

    def issue_access_token(
        self, client_id: str, scopes: Sequence[str], *, lifetime_s: int | None = None, now: float | None = None
    ) -> str:
        """An access token as the token endpoint would issue it (for labs that skip the token dance)."""
        return vkp.make_access_token(
            self._signing_key,
            issuer=self.issuer,
            client_id=client_id,
            scopes=scopes,
            now=self._clock() if now is None else now,
            lifetime_s=self.token_lifetime_s if lifetime_s is None else lifetime_s,
            kid=self._kid,
        )

    def add_to_store(self, orgnr: str, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Put a resource in the store as if it had been recorded (for searches), without callbacks."""
        return self.store.add(orgnr, resource)

    # -- request handling (called on the handler thread)

    def _report_refusal(self, req: RequestSummary, status: int, reason: str) -> None:
        """Status 0: no HTTP exchange took place (the TLS handshake failed). What the peer sent is bounded to
        one printable line, and anything token-like in it is replaced, before a callback or log sees it."""
        req = dataclasses.replace(
            req,
            method=_clean(req.method, 16),
            path=_clean(redact(req.path), 200),
            client_id=_clean(req.client_id, 100) if req.client_id else None,
        )
        reason = _clean(redact(reason), 300)
        log.info("%s refused %s %s: %d %s", self.name, req.method, req.path, status, reason)
        with self._callback_lock:
            self.refused += 1
            if self._on_refused is not None:
                try:
                    self._on_refused(req, status, reason)
                except Exception:
                    log.exception("%s: on_refused callback failed", self.name)

    def _handle(self, h: _Handler, method: str, arrived_ns: int) -> None:
        path = urlsplit(h.path).path
        length_header = h.headers.get("Content-Length")
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = -1
        req = RequestSummary(method, path, None, f"{h.client_address[0]}:{h.client_address[1]}", length, arrived_ns)
        try:
            if method == "POST" and path == "/connect/token":
                status, body, headers = self._token(h, req)
                h.reply(status, body, headers, content_type="application/json")
                return
            status, body, headers = self._fhir(h, method, path, req)
            h.reply(status, body, headers)
        except _Refusal as r:
            if not h.body_consumed and (req.content_length or 0) != 0:
                h.close_connection = True  # the unread body would be taken for the next request
            client = r.headers.pop("X-Vtlab-Client", None)
            if client:
                req = dataclasses.replace(req, client_id=client)
            self._report_refusal(req, r.status, r.reason)
            ctype = "application/json" if path == "/connect/token" else FHIR_JSON
            h.reply(r.status, r.body, r.headers, content_type=ctype)

    def _read_body(self, h: _Handler, req: RequestSummary) -> bytes:
        if req.content_length is None:
            h.close_connection = True
            raise _outcome(411, "structure", "Content-Length required")
        if req.content_length < 0:
            h.close_connection = True
            raise _outcome(400, "structure", "bad Content-Length")
        if req.content_length > MAX_FHIR_BYTES:
            h.close_connection = True
            if req.content_length <= _DRAIN_LIMIT:  # read it away, so the client gets to see the answer
                left = req.content_length
                with contextlib.suppress(OSError):  # cut off at the request's deadline
                    while left > 0 and (chunk := h.rfile.read(min(left, 65536))):
                        left -= len(chunk)
                h.body_consumed = True
            raise _outcome(413, "too-long", f"body of {req.content_length} bytes exceeds {MAX_FHIR_BYTES}")
        data = h.rfile.read(req.content_length)
        h.body_consumed = True
        if len(data) != req.content_length:
            h.close_connection = True
            if h.deadline_passed():
                h._deadline_reported = True
                raise _outcome(408, "timeout", f"request not complete within {self.request_timeout_s:g}s")
            raise _outcome(400, "structure", "body shorter than Content-Length")
        return data

    # token endpoint

    def _token(self, h: _Handler, req: RequestSummary) -> tuple[int, dict[str, Any], dict[str, str]]:
        try:
            data = self._read_body(h, req)
        except _Refusal as r:
            raise _Refusal(r.status, r.reason, {"error": "invalid_request", "error_description": r.reason}) from None
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        client_hint: str | None = None
        try:
            if ctype != "application/x-www-form-urlencoded":
                raise OAuthError("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
            treq = vkp.parse_token_request(data)
            client_hint = treq.client_id or vkp.unverified_issuer(treq.assertion)
            if client_hint is None:
                raise OAuthError("invalid_client", "client_assertion has no readable iss", status=401)
            with self._clients_lock:
                client = self._clients.get(client_hint)
            if client is None:
                raise OAuthError("invalid_client", "unknown client", status=401)
            now = self._clock()
            claims = vkp.verify_client_assertion(
                treq.assertion, client_id=client.client_id, public_keys=client.keys, token_urls=self.token_urls, now=now
            )
            with self._jti_lock:
                fresh = self._jti.check_and_add(claims.client_id, claims.jti, claims.exp, now)
            if not fresh:
                raise OAuthError("invalid_client", "client_assertion jti already used (replay)", status=401)
            wanted = [s.lower() for s in treq.scopes] or sorted(client.scopes)
            denied = [s for s in wanted if s not in client.scopes]
            if denied:
                raise OAuthError("invalid_scope", f"scope not granted to this client: {' '.join(denied)}")
            token = self.issue_access_token(client.client_id, wanted, now=now)
        except OAuthError as e:
            headers = {"Cache-Control": "no-store"}
            if client_hint:
                headers["X-Vtlab-Client"] = client_hint[:100]
            raise _Refusal(
                e.status, f"{e.error}: {e.description}", {"error": e.error, "error_description": e.description}, headers
            ) from None
        log.debug("%s issued a token to %s for %d scopes", self.name, client.client_id, len(wanted))
        body = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.token_lifetime_s,
            "scope": " ".join(wanted),
        }
        return 200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"}

    # FHIR endpoint

    def _authorise(self, h: _Handler) -> AccessClaims:
        if not self.require_token:
            return _ANONYMOUS
        auth = h.headers.get("Authorization")
        if not auth:
            r = _outcome(401, "login", "no bearer token")
            r.headers["WWW-Authenticate"] = 'Bearer realm="vkp"'
            raise r
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            r = _outcome(401, "login", "Authorization is not a bearer token")
            r.headers["WWW-Authenticate"] = 'Bearer realm="vkp", error="invalid_request"'
            raise r
        try:
            return vkp.verify_access_token(
                token.strip(), public_key=self._public_key, issuer=self.issuer, now=self._clock()
            )
        except OAuthError as e:
            r = _outcome(401, "login", e.description)
            described = e.description.replace('"', "'")
            r.headers["WWW-Authenticate"] = (
                f'Bearer realm="vkp", error="invalid_token", error_description="{described}"'
            )
            raise r from None

    def _require(self, claims: AccessClaims, rtypes: Iterable[str], access: Literal["read", "write"]) -> None:
        if claims is _ANONYMOUS:
            return
        missing = [vkp.scope_for(t, access) for t in dict.fromkeys(rtypes) if not claims.allows(t, access)]
        if missing:
            r = _outcome(403, "forbidden", f"token lacks scope {' '.join(missing)}")
            r.headers["WWW-Authenticate"] = (
                f'Bearer realm="vkp", error="insufficient_scope", scope="{" ".join(missing)}"'
            )
            r.headers["X-Vtlab-Client"] = claims.client_id
            raise r

    def _fhir(
        self, h: _Handler, method: str, path: str, req: RequestSummary
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        prefix = self.base_path + "/"
        if not path.startswith(prefix):
            raise _outcome(404, "not-found", "no such endpoint")
        parts = [p for p in path[len(prefix) :].split("/") if p]
        if not parts or parts[0] not in self.orgnrs:
            raise _outcome(404, "not-found", "unknown organisation number")
        orgnr, rest = parts[0], parts[1:]
        if rest and not _RESOURCE.match(rest[0]):
            raise _outcome(404, "not-found", "not a resource type")
        claims = self._authorise(h)
        if method == "GET":
            if len(rest) == 1:
                return self._search(h, orgnr, rest[0], claims)
            if len(rest) == 2:
                self._require(claims, [rest[0]], "read")
                found = self.store.read(orgnr, rest[0], rest[1])
                if found is None:
                    raise _outcome(404, "not-found", f"{rest[0]}/{rest[1]} not found")
                return 200, found, {}
            raise _outcome(404, "not-found", "no such endpoint")
        if method != "POST" or len(rest) > 1 or self.read_only:
            r = _outcome(
                405, "not-supported", f"{method} not supported here" + (" (a read-only API)" if self.read_only else "")
            )
            r.headers["Allow"] = "GET"
            raise r
        data = self._read_body(h, req)
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in (FHIR_JSON, "application/json"):
            raise _outcome(415, "not-supported", f"Content-Type {ctype[:60]!r}; send {FHIR_JSON}")
        try:
            if rest:
                raw, summary = vkp.parse_resource(data, expected_type=rest[0], codes=self.codes)
                raws, summaries, findings = [raw], [summary], list(summary.findings)
                btype = None
            else:
                parsed = vkp.parse_bundle(data, codes=self.codes)
                raws, summaries, findings = (
                    list(parsed.raw_resources),
                    list(parsed.resources),
                    list(parsed.all_findings),
                )
                btype = parsed.type
        except FhirError as e:
            issues = [("error", "structure" if "JSON" in e.reason else "invalid", m, p or None) for p, m in e.issues]
            raise _Refusal(400, e.reason, vkp.operation_outcome(issues), {"X-Vtlab-Client": claims.client_id}) from None
        except ProtocolError as e:
            raise _Refusal(
                400,
                e.reason,
                vkp.operation_outcome([("error", "invalid", e.reason, None)]),
                {"X-Vtlab-Client": claims.client_id},
            ) from None
        self._require(claims, [s.resource_type for s in summaries], "write")
        if btype is not None and btype not in ("transaction", "batch", "message", "document", "collection"):
            raise _outcome(400, "invalid", f"a {btype} Bundle cannot be submitted")
        if findings and self.strict:
            reason = "; ".join(f"{f.path}: {f.message}" for f in findings[:10])
            issues = [
                (
                    "error",
                    "code-invalid"
                    if f.code == "unknown-code"
                    else "required"
                    if f.code.startswith("missing")
                    else "value",
                    f.message,
                    f.path,
                )
                for f in findings
            ]
            raise _Refusal(422, reason, vkp.operation_outcome(issues), {"X-Vtlab-Client": claims.client_id})
        stored = [self.store.add(orgnr, raw) for raw in raws]
        with self._callback_lock:
            for s, st in zip(summaries, stored, strict=True):
                final = dataclasses.replace(
                    s, id=st["id"], version="1", last_updated=_parse_instant(st["meta"]["lastUpdated"]), orgnr=orgnr
                )
                self.accepted += 1
                try:
                    self._on_resource(final, req.arrived_ns)
                except Exception:
                    log.exception("%s: on_resource callback failed (harness fault)", self.name)
                    raise _outcome(500, "exception", "the probe could not record the resource") from None
        log.debug("%s accepted %d resources for %s from %s", self.name, len(stored), orgnr, claims.client_id)
        if rest:
            st = stored[0]
            location = f"{self.base_url(orgnr)}/{st['resourceType']}/{st['id']}/_history/1"
            return 201, st, {"Location": location, "ETag": 'W/"1"', "Last-Modified": st["meta"]["lastUpdated"]}
        response_type = "batch-response" if btype == "batch" else "transaction-response"
        entries = [
            ("201 Created", f"{st['resourceType']}/{st['id']}/_history/1", st["meta"]["lastUpdated"]) for st in stored
        ]
        return 200, vkp.transaction_response(entries, type=response_type), {}

    def _search(
        self, h: _Handler, orgnr: str, rtype: str, claims: AccessClaims
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        self._require(claims, [rtype], "read")
        query = parse_qsl(urlsplit(h.path).query, keep_blank_values=True, max_num_fields=50)
        bounds: list[tuple[str, datetime]] = []
        count, offset = min(50, self.max_count), 0
        patient: tuple[str | None, str] | None = None
        kept: list[tuple[str, str]] = []
        for name, value in query:
            if name not in _SEARCH_PARAMS:
                known = ", ".join(_SEARCH_PARAMS)
                raise _outcome(
                    400, "not-supported", f"unknown search parameter {name[:40]!r} (known: {known})", name[:40]
                )
            try:
                if name == "_lastUpdated":
                    m = _DATE_PARAM.match(value)
                    if not m:
                        raise ValueError(value)
                    bounds.append((m.group(1) or "eq", _parse_instant(m.group(2))))
                    kept.append((name, value))
                elif name == "_count":
                    count = min(self.max_count, int(value))
                    if count < 1:
                        raise ValueError(value)
                elif name == "_offset":
                    offset = int(value)
                    if offset < 0:
                        raise ValueError(value)
                elif name == "_sort":
                    if value not in ("_lastUpdated", ""):
                        raise ValueError(value)
                elif patient is not None or not value or len(value) > 200:
                    raise ValueError(value)
                else:  # patient=[system|]value or patient:identifier=[system|]value
                    system, bar, ident = value.rpartition("|")
                    patient = (system if bar and system else None, ident)
                    if not ident:
                        raise ValueError(value)
                    kept.append((name, value))
            except ValueError:
                raise _outcome(400, "invalid", f"bad search parameter {name}", name) from None
        page, total = self.store.search(orgnr, rtype, bounds, offset, count, patient)
        base = f"{self.base_url(orgnr)}/{rtype}"
        self_url = f"{base}?{urlencode([*kept, ('_count', str(count)), ('_offset', str(offset))])}"
        next_url = None
        if offset + len(page) < total:
            next_url = f"{base}?{urlencode([*kept, ('_count', str(count)), ('_offset', str(offset + count))])}"
        return 200, vkp.searchset(page, self_url=self_url, next_url=next_url, total=total), {}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler], ctx: ssl.SSLContext, probe: EpjProbe
    ) -> None:
        self.ssl_ctx = ctx
        self.probe = probe
        super().__init__(addr, handler)

    _active = 0
    _active_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        """At most `max_connections` at once: a client opening connections without end gets the rest closed
        at once (one refusal each), and cannot take every thread and socket of the process."""
        with self._active_lock:
            full = self._active >= self.probe.max_connections
            if not full:
                self._active += 1
        if full:
            peer = f"{client_address[0]}:{client_address[1]}"
            req = RequestSummary("-", "", None, peer, None, time.monotonic_ns())
            self.shutdown_request(request)
            self.probe._report_refusal(req, 503, f"more than {self.probe.max_connections} connections at once")
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            with self._active_lock:
                self._active -= 1
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1

    def get_request(self) -> tuple[Any, Any]:
        sock, addr = self.socket.accept()
        sock.settimeout(self.probe.io_timeout_s)
        # The TLS handshake happens on the handler's thread, so a slow client never blocks accept().
        return self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("%s: connection from %s ended with an error", self.probe.name, client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "vtlab-epj"
    sys_version = ""

    body_consumed = False
    _watch: _Watch | None = None
    _deadline_reported = False

    def setup(self) -> None:
        super().setup()
        watch = _REAPER.watch(self.request, self.server.probe.request_timeout_s)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            req = RequestSummary("-", "", None, peer, None, time.monotonic_ns())
            why = "not complete within the deadline" if watch.fired else type(e).__name__
            self.server.probe._report_refusal(req, 0, f"TLS handshake failed: {why}")
            self.close_connection = True
            raise
        finally:
            watch.cancel()

    def handle_one_request(self) -> None:
        """One request within the probe's `request_timeout_s`, however slowly the client sends it."""
        self._watch = _REAPER.watch(self.request, self.server.probe.request_timeout_s)
        self._deadline_reported = False
        self.raw_requestline = b""
        try:
            super().handle_one_request()
        finally:
            self._watch.cancel()
        if self._watch.fired:
            self.close_connection = True
            if self.raw_requestline and not self._deadline_reported:  # an idle keep-alive connection is no finding
                self._report_slow()

    def deadline_passed(self) -> bool:
        return self._watch is not None and self._watch.fired

    def _report_slow(self) -> None:
        self._deadline_reported = True
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        path = urlsplit(getattr(self, "path", "") or "").path
        req = RequestSummary(getattr(self, "command", None) or "-", path, None, peer, None, time.monotonic_ns())
        timeout = self.server.probe.request_timeout_s
        self.server.probe._report_refusal(req, 408, f"request not complete within {timeout:g}s (a stalled client)")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Requests http.server refuses itself (malformed request line, unsupported method) are refusals too."""
        if self.deadline_passed():  # what was read is a fragment of a request cut off at the deadline
            self.close_connection = True
            return
        arrived = time.monotonic_ns()
        path = urlsplit(getattr(self, "path", "") or "").path
        peer = f"{self.client_address[0]}:{self.client_address[1]}"
        req = RequestSummary(getattr(self, "command", None) or "-", path, None, peer, None, arrived)
        self.server.probe._report_refusal(req, code, _TOKEN_IN_TEXT.sub(r"\1=[redacted]", message or ""))
        super().send_error(code, message, explain)

    def do_POST(self) -> None:
        arrived = time.monotonic_ns()
        self.body_consumed = False
        self.server.probe._handle(self, "POST", arrived)

    def do_GET(self) -> None:
        arrived = time.monotonic_ns()
        self.server.probe._handle(self, "GET", arrived)

    def do_PUT(self) -> None:
        arrived = time.monotonic_ns()
        self.server.probe._handle(self, "PUT", arrived)

    def do_DELETE(self) -> None:
        arrived = time.monotonic_ns()
        self.server.probe._handle(self, "DELETE", arrived)

    def reply(
        self, status: int, body: Mapping[str, Any] | None, headers: Mapping[str, str], *, content_type: str = FHIR_JSON
    ) -> None:
        data = vkp.encode(body) if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            if not k.startswith("X-Vtlab-"):
                self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("%s %s %s", self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: %s", _TOKEN_IN_TEXT.sub(r"\1=[redacted]", format % args))


# ----------------------------------------------------------------------------------- client (lab side)


class LocalSetupError(OSError):
    """vtlab's own side of a request could not be set up (its CA or private key file unreadable or not a
    key): a harness fault, never the platform's. Says which file, never what is in it."""


def _ssl_context(ca: Path | str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except (OSError, ValueError) as e:
        raise LocalSetupError(
            f"vtlab's CA file {ca} could not be loaded: {type(e).__name__}: {getattr(e, 'strerror', None) or e}"[:300]
        ) from None


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes  # at most MAX_FHIR_BYTES + 1: one byte more says the answer was larger than that
    answered_ns: int

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), "")


class _Watch:
    """A socket's deadline: when it passes, the connection is shut down (through a duplicate of the socket,
    so the owner's object is never touched from another thread), and any read blocked on it returns."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = socket.fromfd(sock.fileno(), sock.family, sock.type)  # SSLSocket has no dup()
        self.deadline = deadline
        self._lock = threading.Lock()
        self.fired = False
        self.done = False

    def fire(self) -> None:
        with self._lock:
            if self.done:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        with self._lock:
            self.done = True
            self._sock.close()


class _Reaper:
    """One daemon thread that fires the deadlines of watched sockets. A socket timeout bounds each read,
    not the whole: a peer trickling one byte per second would hold a request (and the thread serving it)
    for as long as it likes without this."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, seconds: float) -> _Watch:
        w = _Watch(sock, time.monotonic() + seconds)
        with self._cv:
            heapq.heappush(self._heap, (w.deadline, next(self._seq), w))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="vtlab-epj-deadlines", daemon=True)
                self._thread.start()
            self._cv.notify()
        return w

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap:
                    self._cv.wait()
                deadline, _, w = self._heap[0]
                wait = deadline - time.monotonic()
                if not w.done and wait > 0:
                    self._cv.wait(wait)
                    continue
                heapq.heappop(self._heap)
            w.fire()


_REAPER = _Reaper()


class _Deadline:
    """The whole of one HTTP exchange (connect, TLS, request, status, headers, body) within `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self._watches: list[_Watch] = []

    @property
    def fired(self) -> bool:
        return any(w.fired for w in self._watches) or time.monotonic() > self.end

    def connect(
        self, address: tuple[str, int], timeout: float | None = None, source_address: tuple[str, int] | None = None
    ) -> socket.socket:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed before connecting")
        sock = socket.create_connection(address, min(left, timeout or left), source_address)
        self._watches.append(_REAPER.watch(sock, max(0.0, self.end - time.monotonic())))
        return sock

    def close(self) -> None:
        for w in self._watches:
            w.cancel()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is the answer, never followed: the bearer token would go along to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _guarded(cls: type[http.client.HTTPConnection], deadline: _Deadline) -> Callable[..., http.client.HTTPConnection]:
    def connection(host: str, **kw: Any) -> http.client.HTTPConnection:
        conn = cls(host, **kw)
        conn._create_connection = deadline.connect  # type: ignore[attr-defined]
        return conn

    return connection


class _GuardedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, context: ssl.SSLContext, deadline: _Deadline) -> None:
        super().__init__(context=context)
        self._ctx = context
        self._deadline = deadline

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_guarded(http.client.HTTPSConnection, self._deadline), req, context=self._ctx)


class _GuardedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline: _Deadline) -> None:
        super().__init__()
        self._deadline = deadline

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_guarded(http.client.HTTPConnection, self._deadline), req)


def _read_body(resp: Any, length: str | None) -> bytes:
    """Up to MAX_FHIR_BYTES + 1 bytes of the body; a body that ends before its Content-Length is broken off
    (http.client returns it short without a word when asked for a bounded read)."""
    data: bytes = resp.read(MAX_FHIR_BYTES + 1)
    if length is not None and length.strip().isdigit() and len(data) < min(int(length), MAX_FHIR_BYTES + 1):
        raise http.client.IncompleteRead(data[:0], int(length) - len(data))
    return data


def _http(
    method: str, url: str, *, body: bytes | None, headers: Mapping[str, str], ca: Path | str | None, timeout_s: float
) -> _Response:
    """One exchange, bounded for any peer: all of it within `timeout_s` (TimeoutError otherwise), the body
    read up to MAX_FHIR_BYTES + 1, redirects answered, not followed (proxies from the environment apply)."""
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    deadline = _Deadline(timeout_s)
    opener = urllib.request.build_opener(
        _NoRedirect(), _GuardedHTTPS(_ssl_context(ca), deadline), _GuardedHTTP(deadline)
    )
    try:
        try:
            with opener.open(request, timeout=timeout_s) as resp:
                data = _read_body(resp, resp.headers.get("Content-Length"))
                status, got = resp.status, dict(resp.headers.items())
        except urllib.error.HTTPError as e:
            try:
                data = _read_body(e, e.headers.get("Content-Length") if e.headers else None) if e.fp else b""
            finally:
                e.close()
            status, got = e.code, dict(e.headers.items()) if e.headers else {}
    except Exception:
        if deadline.fired:
            raise TimeoutError(f"no complete answer within {timeout_s:g}s") from None
        raise
    finally:
        deadline.close()
    if deadline.fired:  # a body without a length ends where the connection was shut down: not an answer
        raise TimeoutError(f"no complete answer within {timeout_s:g}s")
    return _Response(status, got, data, time.monotonic_ns())


class TokenError(Exception):
    """The token endpoint refused (its OAuth2 error code and description; nothing secret)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        self.status = status
        self.error = error
        self.description = description
        super().__init__(f"token endpoint answered {status} {error}: {description}")


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str = field(repr=False)
    expires_at: float
    scopes: tuple[str, ...]


def fetch_token(
    token_url: str,
    client: ClientKey,
    *,
    ca: Path | str | None,
    scopes: Sequence[str] | None = None,
    now: float | None = None,
    timeout_s: float = 10.0,
) -> AccessToken:
    """Client credentials with private_key_jwt: sign an assertion with the client's key, get a token."""
    t = time.time() if now is None else now
    try:
        key = vkp.load_private_key(client.private_key.read_bytes())
    except (OSError, ValueError, TypeError) as e:  # the text of a parse error never quotes the key
        raise LocalSetupError(
            f"vtlab's private key {client.private_key} could not be read as a PEM key: "
            f"{type(e).__name__}: {getattr(e, 'strerror', None) or 'not a usable key'}"
        ) from None
    assertion = vkp.make_client_assertion(client.client_id, token_url, key, now=t, kid=client.kid)
    form = urlencode(
        {
            "grant_type": "client_credentials",
            "client_id": client.client_id,
            "client_assertion_type": vkp.CLIENT_ASSERTION_TYPE,
            "client_assertion": assertion,
            "scope": " ".join(scopes if scopes is not None else client.scopes),
        }
    ).encode()
    resp = _http(
        "POST",
        token_url,
        body=form,
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        ca=ca,
        timeout_s=timeout_s,
    )
    try:
        answer = json.loads(resp.body)
    except (ValueError, RecursionError):  # not JSON, nested too deep, too many digits
        answer = {}
    if resp.status == 200 and (not isinstance(answer, dict) or "access_token" not in answer):
        raise TokenError(200, "invalid_token_response", "the answer is not a JSON object with an access_token")
    if resp.status != 200:
        err = answer if isinstance(answer, dict) else {}
        description = redact(str(err.get("error_description", ""))[:4000])
        raise TokenError(resp.status, _clean(str(err.get("error", "unknown")), 60), _clean(description, 200))
    token = answer["access_token"]
    if not isinstance(token, str) or not _TOKEN_CHARS.fullmatch(token):  # it goes into a header line as it is
        raise TokenError(resp.status, "invalid_token_response", "access_token is not a token (RFC 6750 b64token)")
    try:
        lifetime = min(max(float(answer.get("expires_in", 60)), 0.0), 86400.0)
    except (TypeError, ValueError, OverflowError):
        raise TokenError(resp.status, "invalid_token_response", "expires_in is not a number of seconds") from None
    if lifetime != lifetime:  # NaN
        lifetime = 0.0
    return AccessToken(token, t + lifetime, tuple(str(answer.get("scope", ""))[:4000].split()))


_TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]{1,8192}")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e\u00a0-\ufffc]+")


def _clean(text: str, limit: int) -> str:
    """Peer text made one printable line of at most `limit` characters (it goes into evidence and reports)."""
    text = _UNPRINTABLE.sub(" ", text[: limit * 4])
    return text if len(text) <= limit else text[: limit - 1] + "…"


class HelseIdTokenProvider:
    """A callable that returns a valid access token, fetching a new one shortly before the old expires."""

    def __init__(
        self,
        token_url: str,
        client: ClientKey,
        *,
        ca: Path | str | None,
        scopes: Sequence[str] | None = None,
        margin_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        timeout_s: float = 10.0,
    ) -> None:
        self.timeout_s = timeout_s
        self.token_url = token_url
        self.client = client
        self.ca = ca
        self.scopes = scopes
        self.margin_s = margin_s
        self._clock = clock
        self._lock = threading.Lock()
        self._token: AccessToken | None = None

    def __call__(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is None or self._token.expires_at - now < self.margin_s:
                self._token = fetch_token(
                    self.token_url, self.client, ca=self.ca, scopes=self.scopes, now=now, timeout_s=self.timeout_s
                )
            return self._token.token


@dataclass(frozen=True, slots=True)
class PushResult:
    """The FHIR server's answer to a push: status, parsed body (a Bundle or OperationOutcome), Location."""

    status: int
    body: dict[str, Any] | None
    location: str | None
    sent_ns: int
    answered_ns: int
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def diagnostics(self) -> list[str]:
        if not self.body or self.body.get("resourceType") != "OperationOutcome":
            return []
        return [str(i.get("diagnostics", "")) for i in self.body.get("issue", [])]


def push_bundle(
    base_url: str,
    bundle: Mapping[str, Any] | bytes,
    token_provider: Callable[[], str] | None,
    ca: Path | str | None,
    *,
    resource_type: str | None = None,
    timeout_s: float = 10.0,
) -> PushResult:
    """POST a Bundle to `<base_url>/` (or one resource to `<base_url>/<resource_type>`) with a bearer token.

    Returns whatever the server answered (4xx included); raises only when the server cannot be reached.
    `token_provider=None` sends no Authorization header (to test refusals).
    """
    data = bundle if isinstance(bundle, bytes) else vkp.encode(bundle)
    url = base_url.rstrip("/") + (f"/{resource_type}" if resource_type else "/")
    headers = {"Content-Type": f"{FHIR_JSON}; charset=utf-8", "Accept": FHIR_JSON}
    if token_provider is not None:
        headers["Authorization"] = f"Bearer {token_provider()}"
    sent = time.monotonic_ns()
    resp = _http("POST", url, body=data, headers=headers, ca=ca, timeout_s=timeout_s)
    body: dict[str, Any] | None = None
    with contextlib.suppress(ValueError):
        parsed = json.loads(resp.body) if resp.body else None
        body = parsed if isinstance(parsed, dict) else None
    location = next((v for k, v in resp.headers.items() if k.lower() == "location"), None)
    return PushResult(resp.status, body, location, sent, resp.answered_ns, resp.headers)


def fhir_get(
    url: str, token_provider: Callable[[], str] | None, ca: Path | str | None, *, timeout_s: float = 10.0
) -> PushResult:
    """GET a FHIR read or search with a bearer token (`None`: no Authorization header, to test refusals).
    Returns whatever the server answered; raises only when the server cannot be reached."""
    headers = {"Accept": FHIR_JSON}
    if token_provider is not None:
        headers["Authorization"] = f"Bearer {token_provider()}"
    sent = time.monotonic_ns()
    resp = _http("GET", url, body=None, headers=headers, ca=ca, timeout_s=timeout_s)
    body: dict[str, Any] | None = None
    with contextlib.suppress(ValueError):
        parsed = json.loads(resp.body) if resp.body else None
        body = parsed if isinstance(parsed, dict) else None
    return PushResult(resp.status, body, None, sent, resp.answered_ns, resp.headers)


# ---------------------------------------------------------------------------------------------- poller


@dataclass(frozen=True, slots=True)
class PollFailure:
    """One failed search, with nothing secret in it. `side` says who failed: `platform` (it answered
    wrongly or not in time: a finding) or `harness` (vtlab's own key or CA file, or its own handling: a
    harness fault). `signature` is what stays the same when the failure repeats (e.g. `HTTP 401`)."""

    side: Literal["platform", "harness"]
    resource_type: str
    signature: str
    message: str  # short: "search DetectedIssue answered 401"
    detail: str = ""  # what the answer said (OperationOutcome diagnostics, the parse error), redacted

    @property
    def text(self) -> str:
        return f"{self.message}: {self.detail}" if self.detail else self.message


_JWT = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{8,}+\.[A-Za-z0-9_-]{4,}+")
"""Starts only where a run of base64url characters starts, and never backtracks into one: linear in the text
(the plain pattern took minutes on half a megabyte of letters a platform sent)."""
MAX_REDACTED = 20_000
"""Characters of peer text redacted and kept; callers keep a few hundred of them."""
_BEARER = re.compile(r"(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)  # RFC 6750 b64token, not a word


def redact(text: str, *secrets: str) -> str:
    """Text from a peer or an exception with every token-like thing replaced: the secrets given, JWTs,
    bearer credentials and `access_token=`/`client_assertion=` values."""
    text = text[:MAX_REDACTED]
    for secret in secrets:
        if secret and len(secret) >= 8:
            text = text.replace(secret, "[token]")
    text = _TOKEN_IN_TEXT.sub(lambda m: f"{m.group(1)}=[hidden]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} [hidden]", text)
    return _JWT.sub("[token]", text)


def _outcome_text(body: Mapping[str, Any] | None) -> str:
    """An OperationOutcome's issues as one line (severity, code, diagnostics), or ''."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ""
    raw = body.get("issue")
    issues: list[Any] = raw if isinstance(raw, list) else []
    parts = []
    for issue in issues[:3]:
        if isinstance(issue, Mapping):
            words = [str(issue.get(k)) for k in ("severity", "code") if issue.get(k)]
            details = issue.get("details")
            diag = issue.get("diagnostics") or (details.get("text") if isinstance(details, Mapping) else None)
            parts.append(" ".join(words) + (f" ({diag})" if diag else ""))
    return "OperationOutcome " + "; ".join(parts) if parts else "OperationOutcome without issues"


def _unreachable(e: BaseException, timeout_s: float) -> tuple[str, str]:
    """(signature, words) for a request that got no HTTP answer."""
    import http.client
    import socket

    reason: object = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timeout", f"did not answer within {timeout_s:g}s (timeout)"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "TLS certificate", f"presented a certificate vtlab does not accept: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError):
        return "TLS", f"TLS failed: {reason.reason or reason}"
    if isinstance(reason, ConnectionRefusedError):
        return "refused", "refused the connection"
    if isinstance(reason, http.client.HTTPException | ConnectionError):
        return "broken answer", f"broke off its answer: {type(reason).__name__}"
    return type(reason).__name__, f"could not be reached: {type(reason).__name__}: {str(reason)[:160]}"


def _retry_after(value: str) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None when it is neither."""
    if value.isdigit():
        return float(value[:12])
    try:
        when = email.utils.parsedate_to_datetime(value[:64])
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class EpjPoller:
    """Polls a supplier's FHIR API by search (`GET <base>/<Resource>?_lastUpdated=ge<t>`, following `next`
    links) and hands each new resource version to `on_resource` exactly once.

    `ge` with a set of what was seen at the high-water mark, not `gt`: a resource recorded in the same
    instant as the last one seen, after that poll, would be skipped forever by `gt`. Nothing last updated
    before `since` is ever handed over, even from an API that ignores `_lastUpdated`.
    Arrival stamps are when the poll's answer arrived (the record's own lastUpdated is in the summary).
    Every failed search goes to `on_failure` (a `PollFailure`, nothing secret in it) and its short message
    to `on_error`; the next search that succeeds picks up what was missed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token_provider: Callable[[], str],
        on_resource: ResourceCallback,
        resource_types: Sequence[str] = ("DetectedIssue",),
        ca: Path | str | None = None,
        since: datetime | None = None,
        interval_s: float = 5.0,
        page_size: int = 50,
        max_pages: int = 100,
        codes: CodeTables = DEFAULT_CODES,
        on_error: Callable[[str], None] | None = None,
        on_failure: Callable[[PollFailure], None] | None = None,
        on_round: Callable[[], None] | None = None,
        timeout_s: float = 10.0,
        lookback: timedelta = timedelta(0),
        name: str = "epj-poller",
        max_backoff_s: float | None = None,
    ) -> None:
        """`lookback`: every search reaches this far behind the newest lastUpdated seen, so a record the platform
        commits with a slightly older stamp (another writer, a clock a little behind) is still found.
        `max_backoff_s`: the longest Retry-After (of a 429 or 503) honoured before the next round (default
        the search timeout or 5 intervals, whichever is longer, at most 60s): a platform cannot stop the
        polling by asking for a day's rest."""
        self.base_url = base_url.rstrip("/")
        self.lookback = lookback
        self._origin = urlsplit(self.base_url)[:2]
        self._token = token_provider
        self._on_resource = on_resource
        self.resource_types = tuple(resource_types)
        self.ca = ca
        self.since = since
        self.interval_s = interval_s
        self.page_size = page_size
        self.max_pages = max_pages
        self.codes = codes
        self._on_error = on_error
        self._on_failure = on_failure
        self._on_round = on_round
        self.timeout_s = timeout_s
        self.name = name
        self._high: dict[str, datetime | None] = dict.fromkeys(self.resource_types, since)
        self._seen: dict[str, dict[tuple[str, str], datetime | None]] = {t: {} for t in self.resource_types}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_token = ""
        self.polls = 0
        self.errors = 0
        self.too_old = 0  # listed although last updated before what was asked for (not handed over)
        self.max_backoff_s = max_backoff_s if max_backoff_s is not None else min(60.0, max(timeout_s, 5 * interval_s))
        self._backoff_s = 0.0  # a Retry-After to honour before the next round

    def poll_once(self) -> int:
        """One round over every resource type; returns how many new resources were handed over."""
        with self._lock:
            self.polls += 1
            try:
                return sum(self._poll_type(t) for t in self.resource_types)
            finally:
                if self._on_round is not None:
                    self._on_round()

    def _fail(
        self, side: Literal["platform", "harness"], rtype: str, signature: str, message: str, detail: str = ""
    ) -> None:
        failure = PollFailure(
            side,
            _clean(rtype, 64),
            _clean(redact(signature, self._last_token), 80),
            _clean(redact(message, self._last_token), 300),
            _clean(redact(detail, self._last_token), 400),
        )
        self.errors += 1
        log.info("%s: %s", self.name, failure.text)
        try:
            if self._on_error is not None:
                self._on_error(failure.message)
            if self._on_failure is not None:
                self._on_failure(failure)
        except Exception:
            log.exception("%s: failure callback failed", self.name)

    def _get(self, rtype: str, url: str) -> _Response | None:
        """One page of a search; None (after reporting why) when there is no HTTP answer to read."""
        try:
            token = self._token()
            self._last_token = token
        except LocalSetupError as e:
            self._fail("harness", rtype, "local key", f"search {rtype} not sent: vtlab's side failed", str(e))
            return None
        except TokenError as e:
            self._fail(
                "platform",
                rtype,
                f"token HTTP {e.status} {e.error}",
                f"search {rtype} not sent: the token endpoint answered {e.status} {e.error}",
                e.description,
            )
            return None
        except (OSError, urllib.error.URLError) as e:
            sig, words = _unreachable(e, self.timeout_s)
            self._fail("platform", rtype, f"token {sig}", f"search {rtype} not sent: the token endpoint {words}")
            return None
        except Exception as e:  # the token endpoint's answer broke the client: say so, never crash the poller
            self._fail(
                "platform",
                rtype,
                f"token {type(e).__name__}",
                f"search {rtype} not sent: the token endpoint's answer could not be used",
                f"{type(e).__name__}: {e}",
            )
            return None
        try:
            return _http(
                "GET",
                url,
                body=None,
                headers={"Accept": FHIR_JSON, "Authorization": f"Bearer {token}"},
                ca=self.ca,
                timeout_s=self.timeout_s,
            )
        except LocalSetupError as e:
            self._fail("harness", rtype, "local CA", f"search {rtype} not sent: vtlab's side failed", str(e))
        except Exception as e:  # OSError, URLError, http.client.HTTPException: no usable answer
            sig, words = _unreachable(e, self.timeout_s)
            self._fail("platform", rtype, sig, f"search {rtype} at {self.base_url} {words}")
        return None

    def _page(self, rtype: str, resp: _Response) -> vkp.ParsedBundle | None:
        """The answer as a searchset Bundle; None (after reporting what was wrong) otherwise."""
        if resp.status != 200:
            self._refused(rtype, resp)
            return None
        if len(resp.body) > MAX_FHIR_BYTES:
            self._fail(
                "platform",
                rtype,
                "too large",
                f"search {rtype} answered 200 with a body larger than {MAX_FHIR_BYTES} bytes; not read further",
            )
            return None
        ctype = resp.header("Content-Type").split(";")[0].strip().lower()
        if ctype not in (FHIR_JSON, "application/json"):
            self._fail(
                "platform",
                rtype,
                "Content-Type",
                f"search {rtype} answered 200 with Content-Type {ctype[:60]!r}, not {FHIR_JSON}; not read",
            )
            return None
        try:
            body = vkp.decode(resp.body)  # bounded: size, depth, digits; never raises anything else
        except FhirError as e:
            detail = f"malformed JSON, {len(resp.body)} bytes" if e.reason.startswith("not JSON") else ""
            if e.reason.startswith(("not JSON", "not UTF-8", "JSON nested")):
                self._fail(
                    "platform",
                    rtype,
                    "not JSON",
                    f"search {rtype} answered 200 with a body that is not JSON vtlab can read",
                    f"{detail} ({e.reason})" if detail else e.reason,
                )
            else:
                self._fail(
                    "platform",
                    rtype,
                    "invalid FHIR",
                    f"search {rtype} answered a Bundle that is not valid FHIR",
                    e.reason,
                )
            return None
        if body.get("resourceType") == "OperationOutcome":
            self._fail(
                "platform",
                rtype,
                "OperationOutcome",
                f"search {rtype} answered 200 with an OperationOutcome, not a searchset Bundle",
                _outcome_text(body),
            )
            return None
        try:
            page = vkp.parse_bundle(body, codes=self.codes)
        except ProtocolError as e:
            self._fail(
                "platform", rtype, "invalid FHIR", f"search {rtype} answered a Bundle that is not valid FHIR", e.reason
            )
            return None
        except Exception as e:  # vtlab's reader failed on what the platform sent: say so, keep polling
            log.warning("%s: the FHIR reader failed on a search answer: %s", self.name, type(e).__name__)
            self._fail(
                "platform",
                rtype,
                "unreadable FHIR",
                f"search {rtype} answered a Bundle vtlab's FHIR reader could not read",
                type(e).__name__,
            )
            return None
        if page.type != "searchset":
            self._fail(
                "platform", rtype, "not a searchset", f"search {rtype} answered a {page.type} Bundle, not a searchset"
            )
            return None
        return page

    def _refused(self, rtype: str, resp: _Response) -> None:
        """A search answered with a status other than 200: a finding saying what came back. A redirect is
        never followed (the token would go along); a Retry-After of 429 or 503 is honoured up to
        `max_backoff_s` before the next round."""
        body: Any = None
        with contextlib.suppress(FhirError):
            body = vkp.decode(resp.body) if resp.body and len(resp.body) <= MAX_FHIR_BYTES else None
        extra = []
        message = f"search {rtype} answered {resp.status}"
        if 300 <= resp.status < 400:
            where = urlsplit(resp.header("Location"))
            message += f" (a redirect to {where.scheme}://{where.netloc}{where.path}); not followed"
        if resp.status in (429, 503) and resp.header("Retry-After"):
            raw = resp.header("Retry-After").strip()
            wait = _retry_after(raw)
            if wait is None:
                extra.append(f"Retry-After {_clean(raw, 40)!r} not understood")
            else:
                self._backoff_s = max(self._backoff_s, min(wait, self.max_backoff_s))
                extra.append(f"Retry-After {_clean(raw, 40)}: next search in {self._backoff_s:g}s")
        if _outcome_text(body):
            extra.append(_outcome_text(body))
        self._fail("platform", rtype, f"HTTP {resp.status}", message, ", ".join([f"HTTP {resp.status}", *extra]))

    def _poll_type(self, rtype: str) -> int:
        params: list[tuple[str, str]] = []
        high = self._high[rtype]
        if high is not None and self.lookback and high != self.since:
            high = high - self.lookback if self.since is None else max(self.since, high - self.lookback)
        if high is not None:
            params.append(("_lastUpdated", f"ge{_instant(high)}"))
        params += [("_sort", "_lastUpdated"), ("_count", str(self.page_size))]
        url: str | None = f"{self.base_url}/{rtype}?{urlencode(params)}"
        new = 0
        pages = 0
        too_old = 0
        seen = self._seen[rtype]
        visited: set[str] = set()
        while url is not None:
            if pages >= self.max_pages:
                self._fail(
                    "platform",
                    rtype,
                    "too many pages",
                    f"search {rtype}: next link after {pages} pages; the rest is read by the next round",
                )
                break
            pages += 1
            if urlsplit(url)[:2] != self._origin:
                self._fail(
                    "platform",
                    rtype,
                    "next link elsewhere",
                    f"search {rtype}: next link leaves {self._origin[1]}; not followed (the token stays here)",
                )
                break
            if url in visited:
                self._fail(
                    "platform",
                    rtype,
                    "next link loops",
                    f"search {rtype}: next link points to a page already read in this search; not followed",
                )
                break
            visited.add(url)
            resp = self._get(rtype, url)
            page = self._page(rtype, resp) if resp is not None else None
            if page is None:
                break
            for s in page.resources:
                if s.resource_type != rtype:
                    continue  # _include'd resources are not what was asked for
                if high is not None and s.last_updated is not None and s.last_updated < high:
                    too_old += 1  # before what was asked for: seen already, or from before the run
                    continue
                key = (s.id or s.full_url or "", s.version or (str(s.last_updated) if s.last_updated else ""))
                if key in seen:
                    continue
                seen[key] = s.last_updated
                current = self._high[rtype]
                if s.last_updated is not None and (current is None or s.last_updated > current):
                    self._high[rtype] = s.last_updated
                new += 1
                try:
                    self._on_resource(s, resp.answered_ns)  # type: ignore[union-attr]
                except Exception as e:
                    log.exception("%s: on_resource callback failed (harness fault)", self.name)
                    self._fail(
                        "harness",
                        rtype,
                        "handover",
                        f"a {rtype} read could not be recorded",
                        f"{type(e).__name__}: {e}",
                    )
            url = urljoin(url, page.next_url) if page.next_url else None
        if too_old:
            self.too_old += too_old
            self._fail(
                "platform",
                rtype,
                "ignores _lastUpdated",
                f"search {rtype} listed {too_old} record(s) last updated before the requested "
                f"_lastUpdated=ge{_instant(high) if high else ''}; not taken (the API seems to ignore it)",
            )
        hw = self._high[rtype]
        if hw is not None:  # only what sits at or after the next search's bound can come back from a `ge` search
            keep_from = hw - self.lookback
            self._seen[rtype] = {k: v for k, v in seen.items() if v is None or v >= keep_from}
        return new

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as e:
                log.exception("%s: poll failed", self.name)
                self._fail(
                    "harness",
                    "*",
                    f"poller {type(e).__name__}",
                    "a poll failed inside vtlab",
                    f"{type(e).__name__}: {e}",
                )
            backoff, self._backoff_s = self._backoff_s, 0.0
            self._stop.wait(max(self.interval_s, backoff))

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
