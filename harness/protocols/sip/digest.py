"""HTTP Digest authentication as SIP uses it (RFC 3261 22.4, RFC 2617, RFC 7616): MD5 and SHA-256.

The client side answers a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) challenge to a MESSAGE
with a new request carrying Authorization / Proxy-Authorization; the server side issues challenges and
verifies credentials. Nonces and cnonces are arguments (no randomness or clock decides here apart from
`new_cnonce`), so the RFC's worked examples are test vectors.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from harness.protocols.base import ProtocolError
from harness.protocols.sip import _abnf
from harness.protocols.sip.events import Request, Response
from harness.protocols.sip.message import SipParseError, cseq, split_list

PROTOCOL = "SIP digest"
ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda b: hashlib.md5(b, usedforsecurity=False).hexdigest(),
    "SHA-256": lambda b: hashlib.sha256(b).hexdigest(),
}
_PARAM = re.compile(rf"[ \t]*(?P<name>{_abnf.token})[ \t]*=[ \t]*(?P<value>{_abnf.quoted_string}|[^,\s]+)[ \t]*")


def _hash(algorithm: str, text: str) -> str:
    base = algorithm.upper().removesuffix("-SESS")
    fn = ALGORITHMS.get(base)
    if fn is None:
        raise ProtocolError(PROTOCOL, f"unsupported algorithm {algorithm!r} (MD5, SHA-256 and their -sess forms)")
    return fn(text.encode("utf-8"))


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """`Digest realm="x", nonce="y"` -> ("Digest", {"realm": "x", "nonce": "y"}); names lower-cased."""
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if not re.fullmatch(_abnf.token, scheme):
        raise ProtocolError(PROTOCOL, f"no authentication scheme in {value[:40]!r}")
    params: dict[str, str] = {}
    for item in split_list(rest):
        m = _PARAM.fullmatch(item)
        if not m:
            raise ProtocolError(PROTOCOL, f"malformed auth parameter {item[:40]!r}")
        v = m.group("value")
        if v.startswith('"'):
            v = re.sub(r"\\(.)", r"\1", v[1:-1])
        params[m.group("name").lower()] = v
    return scheme, params


@dataclass(frozen=True, slots=True)
class Challenge:
    """A Digest challenge from WWW-Authenticate (401) or Proxy-Authenticate (407)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    proxy: bool = False

    @property
    def authorization_header(self) -> str:
        return "Proxy-Authorization" if self.proxy else "Authorization"


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge:
    scheme, p = parse_auth_params(value)
    if scheme.lower() != "digest":
        raise ProtocolError(PROTOCOL, f"scheme {scheme!r} is not Digest")
    if "realm" not in p or "nonce" not in p:
        raise ProtocolError(PROTOCOL, "challenge lacks realm or nonce")
    qop = tuple(q.strip() for q in p.get("qop", "").split(",") if q.strip())
    return Challenge(
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=p.get("algorithm", "MD5"),
        qop=qop,
        opaque=p.get("opaque"),
        stale=p.get("stale", "").lower() == "true",
        proxy=proxy,
    )


def challenges(response: Response) -> list[Challenge]:
    """The Digest challenges of a 401/407 whose algorithm vtlab supports, strongest first."""
    out: list[Challenge] = []
    for name, proxy in (("WWW-Authenticate", False), ("Proxy-Authenticate", True)):
        for value in response.headers.get_all(name):
            try:
                ch = parse_challenge(value, proxy=proxy)
            except ProtocolError:
                continue
            if ch.algorithm.upper().removesuffix("-SESS") in ALGORITHMS:
                out.append(ch)
    out.sort(key=lambda c: 0 if c.algorithm.upper().startswith("SHA-256") else 1)
    return out


def response_digest(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str | None = None,
    cnonce: str | None = None,
    qop: str | None = None,
    body: bytes = b"",
) -> str:
    """The `response` value (RFC 2617 3.2.2.1, RFC 7616 3.4.1)."""
    ha1 = _hash(algorithm, f"{username}:{realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _hash(algorithm, f"{ha1}:{nonce}:{cnonce}")
    if qop == "auth-int":
        ha2 = _hash(algorithm, f"{method}:{uri}:" + ALGORITHMS[algorithm.upper().removesuffix("-SESS")](body))
    else:
        ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1}:{nonce}:{ha2}")


def new_cnonce() -> str:
    return secrets.token_hex(12)


def authorization(
    challenge: Challenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge` (qop=auth when offered)."""
    qop = "auth" if "auth" in challenge.qop else "auth-int" if "auth-int" in challenge.qop else None
    nc_text = f"{nc:08x}"
    digest = response_digest(
        algorithm=challenge.algorithm,
        username=username,
        realm=challenge.realm,
        password=password,
        method=method,
        uri=uri,
        nonce=challenge.nonce,
        nc=nc_text if qop else None,
        cnonce=cnonce if qop else None,
        qop=qop,
        body=body,
    )
    parts = [
        f'username="{_q(username)}"',
        f'realm="{_q(challenge.realm)}"',
        f'nonce="{_q(challenge.nonce)}"',
        f'uri="{_q(uri)}"',
        f'response="{digest}"',
        f"algorithm={challenge.algorithm}",
    ]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{_q(cnonce)}"']
    if challenge.opaque is not None:
        parts.append(f'opaque="{_q(challenge.opaque)}"')
    return "Digest " + ", ".join(parts)


def _q(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def authorize(
    request: Request, challenge: Challenge, *, username: str, password: str, cnonce: str, branch: str, nc: int = 1
) -> Request:
    """The request again with credentials: CSeq incremented, a new Via branch (a new transaction)."""
    try:
        cs = cseq(request)
    except SipParseError as exc:
        raise ProtocolError(PROTOCOL, exc.reason) from None
    value = authorization(
        challenge,
        username=username,
        password=password,
        method=request.method,
        uri=request.uri,
        cnonce=cnonce,
        nc=nc,
        body=request.body,
    )
    headers = request.headers.replace("CSeq", f"{cs.seq + 1} {request.method}")
    via = headers.get("Via") or ""
    via = re.sub(r";\s*branch\s*=\s*[^;,\s]+", f";branch={branch}", via, count=1)
    headers = headers.replace("Via", via).replace(challenge.authorization_header, value)
    return Request(request.method, request.uri, headers, request.body)


# --- server side ---------------------------------------------------------------------------------


def make_challenge(
    realm: str, nonce: str, *, algorithm: str = "MD5", opaque: str | None = None, stale: bool = False
) -> str:
    """A WWW-Authenticate / Proxy-Authenticate value offering qop=auth."""
    value = f'Digest realm="{_q(realm)}", nonce="{_q(nonce)}", algorithm={algorithm}, qop="auth"'
    if opaque is not None:
        value += f', opaque="{_q(opaque)}"'
    if stale:
        value += ", stale=true"
    return value


def verify(
    value: str,
    *,
    method: str,
    realm: str,
    password_for: Callable[[str], str | None],
    nonce_ok: Callable[[str], bool],
    body: bytes = b"",
) -> str | None:
    """The authenticated username if `value` (an Authorization header) is right, else None."""
    try:
        scheme, p = parse_auth_params(value)
    except ProtocolError:
        return None
    if scheme.lower() != "digest" or p.get("realm") != realm:
        return None
    username, nonce, uri, given = p.get("username"), p.get("nonce"), p.get("uri"), p.get("response")
    if not (username and nonce and uri and given) or not nonce_ok(nonce):
        return None
    password = password_for(username)
    if password is None:
        return None
    qop = p.get("qop")
    if qop is not None and (qop not in ("auth", "auth-int") or "nc" not in p or "cnonce" not in p):
        return None
    try:
        expected = response_digest(
            algorithm=p.get("algorithm", "MD5"),
            username=username,
            realm=realm,
            password=password,
            method=method,
            uri=uri,
            nonce=nonce,
            nc=p.get("nc"),
            cnonce=p.get("cnonce"),
            qop=qop,
            body=body,
        )
    except ProtocolError:
        return None
    return username if hmac.compare_digest(expected, given.lower()) else None
