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
import json
import logging
import re
import shutil
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
from urllib.parse import parse_qsl, urlencode, urlsplit

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
    "PushResult",
    "RequestSummary",
    "TokenError",
    "fetch_token",
    "push_bundle",
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
        self, orgnr: str, rtype: str, last_updated: Sequence[tuple[str, datetime]], offset: int, count: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One page of `rtype` matching every `_lastUpdated` bound, oldest first; and the total."""
        with self._lock:
            items = [r for r in self._items.get(orgnr, []) if r["resourceType"] == rtype]
        matched = [
            r for r in items if all(_compare(_parse_instant(r["meta"]["lastUpdated"]), p, t) for p, t in last_updated)
        ]
        return matched[offset : offset + count], len(matched)


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
    ) -> None:
        self.name = name
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
        """Status 0: no HTTP exchange took place (the TLS handshake failed)."""
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
                while left > 0 and (chunk := h.rfile.read(min(left, 65536))):
                    left -= len(chunk)
                h.body_consumed = True
            raise _outcome(413, "too-long", f"body of {req.content_length} bytes exceeds {MAX_FHIR_BYTES}")
        data = h.rfile.read(req.content_length)
        h.body_consumed = True
        if len(data) != req.content_length:
            h.close_connection = True
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
        if method != "POST" or len(rest) > 1:
            raise _outcome(405, "not-supported", f"{method} not supported here")
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
        count, offset = 50, 0
        kept: list[tuple[str, str]] = []
        for name, value in query:
            try:
                if name == "_lastUpdated":
                    m = _DATE_PARAM.match(value)
                    if not m:
                        raise ValueError(value)
                    bounds.append((m.group(1) or "eq", _parse_instant(m.group(2))))
                    kept.append((name, value))
                elif name == "_count":
                    count = max(1, min(200, int(value)))
                elif name == "_offset":
                    offset = max(0, int(value))
            except ValueError:
                raise _outcome(400, "invalid", f"bad search parameter {name}", name) from None
        page, total = self.store.search(orgnr, rtype, bounds, offset, count)
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

    def setup(self) -> None:
        super().setup()
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            peer = f"{self.client_address[0]}:{self.client_address[1]}"
            req = RequestSummary("-", "", None, peer, None, time.monotonic_ns())
            self.server.probe._report_refusal(req, 0, f"TLS handshake failed: {type(e).__name__}")
            self.close_connection = True
            raise

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Requests http.server refuses itself (malformed request line, unsupported method) are refusals too."""
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


def _ssl_context(ca: Path | str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca) if ca else None)


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    answered_ns: int


def _http(
    method: str, url: str, *, body: bytes | None, headers: Mapping[str, str], ca: Path | str | None, timeout_s: float
) -> _Response:
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
    try:
        with urllib.request.urlopen(request, context=_ssl_context(ca), timeout=timeout_s) as resp:
            data = resp.read(MAX_FHIR_BYTES + 1)
            return _Response(resp.status, dict(resp.headers.items()), data, time.monotonic_ns())
    except urllib.error.HTTPError as e:
        data = e.read(MAX_FHIR_BYTES + 1) if e.fp is not None else b""
        return _Response(e.code, dict(e.headers.items()) if e.headers else {}, data, time.monotonic_ns())


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
    key = vkp.load_private_key(client.private_key.read_bytes())
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
    except ValueError:
        answer = {}
    if resp.status != 200 or not isinstance(answer, dict) or "access_token" not in answer:
        err = answer if isinstance(answer, dict) else {}
        raise TokenError(resp.status, str(err.get("error", "unknown")), str(err.get("error_description", ""))[:200])
    return AccessToken(
        str(answer["access_token"]),
        t + float(answer.get("expires_in", 60)),
        tuple(str(answer.get("scope", "")).split()),
    )


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
    ) -> None:
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
                self._token = fetch_token(self.token_url, self.client, ca=self.ca, scopes=self.scopes, now=now)
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


# ---------------------------------------------------------------------------------------------- poller


class EpjPoller:
    """Polls a supplier's FHIR API by search (`GET <base>/<Resource>?_lastUpdated=ge<t>`, following `next`
    links) and hands each new resource version to `on_resource` exactly once.

    `ge` with a set of what was seen at the high-water mark, not `gt`: a resource recorded in the same
    instant as the last one seen, after that poll, would be skipped forever by `gt`.
    Arrival stamps are when the poll's answer arrived (the record's own lastUpdated is in the summary).
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
        timeout_s: float = 10.0,
        name: str = "epj-poller",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._origin = urlsplit(self.base_url)[:2]
        self._token = token_provider
        self._on_resource = on_resource
        self.resource_types = tuple(resource_types)
        self.ca = ca
        self.interval_s = interval_s
        self.page_size = page_size
        self.max_pages = max_pages
        self.codes = codes
        self._on_error = on_error
        self.timeout_s = timeout_s
        self.name = name
        self._high: dict[str, datetime | None] = dict.fromkeys(self.resource_types, since)
        self._seen: dict[str, dict[tuple[str, str], datetime | None]] = {t: {} for t in self.resource_types}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.errors = 0

    def poll_once(self) -> int:
        """One round over every resource type; returns how many new resources were handed over."""
        with self._lock:
            self.polls += 1
            return sum(self._poll_type(t) for t in self.resource_types)

    def _error(self, message: str) -> None:
        self.errors += 1
        log.info("%s: %s", self.name, message)
        if self._on_error is not None:
            self._on_error(message)

    def _poll_type(self, rtype: str) -> int:
        params: list[tuple[str, str]] = []
        high = self._high[rtype]
        if high is not None:
            params.append(("_lastUpdated", f"ge{_instant(high)}"))
        params += [("_sort", "_lastUpdated"), ("_count", str(self.page_size))]
        url: str | None = f"{self.base_url}/{rtype}?{urlencode(params)}"
        new = 0
        pages = 0
        seen = self._seen[rtype]
        while url is not None and pages < self.max_pages:
            pages += 1
            if urlsplit(url)[:2] != self._origin:
                self._error(f"next link leaves {self._origin[1]}; not followed (the token stays here)")
                break
            try:
                resp = _http(
                    "GET",
                    url,
                    body=None,
                    headers={"Accept": FHIR_JSON, "Authorization": f"Bearer {self._token()}"},
                    ca=self.ca,
                    timeout_s=self.timeout_s,
                )
            except (OSError, TokenError) as e:
                self._error(f"search {rtype} failed: {type(e).__name__}: {str(e)[:200]}")
                break
            if resp.status != 200:
                self._error(f"search {rtype} answered {resp.status}")
                break
            try:
                page = vkp.parse_bundle(resp.body, codes=self.codes)
            except ProtocolError as e:
                self._error(f"search {rtype} answer is not a valid searchset: {e.reason}")
                break
            if page.type != "searchset":
                self._error(f"search {rtype} answered a {page.type} Bundle, not a searchset")
                break
            for s in page.resources:
                if s.resource_type != rtype:
                    continue  # _include'd resources are not what was asked for
                key = (s.id or s.full_url or "", s.version or (str(s.last_updated) if s.last_updated else ""))
                if key in seen:
                    continue
                seen[key] = s.last_updated
                current = self._high[rtype]
                if s.last_updated is not None and (current is None or s.last_updated > current):
                    self._high[rtype] = s.last_updated
                new += 1
                try:
                    self._on_resource(s, resp.answered_ns)
                except Exception:
                    log.exception("%s: on_resource callback failed (harness fault)", self.name)
            url = page.next_url
        hw = self._high[rtype]
        if hw is not None:  # only what sits at the high-water mark can come back from a `ge` search
            self._seen[rtype] = {k: v for k, v in seen.items() if v is None or v >= hw}
        return new

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("%s: poll failed", self.name)
            self._stop.wait(self.interval_s)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
