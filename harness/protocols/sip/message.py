"""SIP message syntax (RFC 3261 section 7, 18.3, 20; RFC 3428 for MESSAGE): bytes <-> `Request`/`Response`.

One datagram is one message (a body longer than Content-Length is cut, a shorter one refused); on a
stream (TCP, TLS) Content-Length frames each message (`StreamReader`). Sizes and header counts are
bounded; anything malformed raises `SipParseError` (a `ProtocolError`) with the status a server should
answer (400, 505, 413) and, when the headers could be read, the `partial` request so it can answer at all.
"""

from __future__ import annotations

import functools
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from harness.protocols.base import MAX_FRAME_BYTES, ProtocolError
from harness.protocols.sip import _abnf
from harness.protocols.sip.events import LIST_HEADERS, Headers, Message, Request, Response, canonical_name

T = TypeVar("T")

PROTOCOL = "SIP"
MAX_MESSAGE_BYTES = MAX_FRAME_BYTES
"""A SCAIP MESSAGE is about 1 KiB; 64 KiB is the most any vtlab peer may send in one message."""
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100
MAX_CSEQ = 2**31 - 1
REQUIRED_REQUEST_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
REQUIRED_RESPONSE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
SINGLE_HEADERS = ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Type")

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE_SPLIT = re.compile(r"\r?\n")
_ABSOLUTE_URI = re.compile(r'[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>"]+')


class SipParseError(ProtocolError):
    """Bytes that are not an acceptable SIP message.

    `status` is what a server answers (400 Bad Request, 505 Version Not Supported, 413 too large);
    `partial` is the request as far as it could be read, so a server can build that answer (RFC 3261
    8.2.6 needs Via, From, To, Call-ID and CSeq), or None.
    """

    def __init__(self, reason: str, *, status: int = 400, partial: Request | None = None) -> None:
        super().__init__(PROTOCOL, reason)
        self.status = status
        self.partial = partial


# --- header value grammar ------------------------------------------------------------------------


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and <...> (RFC 3261 7.3.1)."""
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:i].strip())
            start = i + 1
    parts.append(value[start:].strip())
    return [p for p in parts if p]


def parse_params(text: str, what: str) -> tuple[tuple[str, str | None], ...]:
    """`;name=value;flag` -> (("name", "value"), ("flag", None)); names lower-cased, quotes kept off."""
    out: list[tuple[str, str | None]] = []
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise SipParseError(f"{what}: expected ';' before parameters, got {text[:30]!r}")
    for chunk in _split_semis(text[1:]):
        m = _abnf.generic_param.fullmatch(chunk)
        if not m:
            raise SipParseError(f"{what}: malformed parameter {chunk[:30]!r}")
        value = m.group("value")
        if value is not None and value.startswith('"'):
            value = _unquote(value)
        out.append((m.group("name").lower(), value))
    return tuple(out)


def _split_semis(text: str) -> list[str]:
    parts: list[str] = []
    quoted = escaped = False
    start = 0
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ";":
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unquote(q: str) -> str:
    return re.sub(r"\\(.)", r"\1", q[1:-1], flags=re.DOTALL)


def _param(params: tuple[tuple[str, str | None], ...], name: str) -> str | None:
    for n, v in params:
        if n == name:
            return v if v is not None else ""
    return None


@dataclass(frozen=True, slots=True)
class Via:
    """One Via entry: `SIP/2.0/UDP host:port;branch=...;received=...;rport=...`."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def branch(self) -> str | None:
        return _param(self.params, "branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}" + _params_text(self.params)


def _params_text(params: Iterable[tuple[str, str | None]]) -> str:
    out = ""
    for n, v in params:
        if v is None:
            out += f";{n}"
        elif v == "" or re.fullmatch(_abnf.token, v):
            out += f";{n}={v}" if v else f";{n}"
        else:
            out += ';{}="{}"'.format(n, v.replace("\\", "\\\\").replace('"', '\\"'))
    return out


CACHED_VALUE_CHARS = 512
"""Header values up to this long are parsed once and remembered (bounded LRU): a transaction reads the top
Via, From, To and CSeq of one message several times (validation, transaction key, response), and the
parsed forms are immutable. Longer values are parsed every time, so hostile input cannot fill memory."""


def _remembered(parse: Callable[[str, str], T]) -> Callable[[str, str], T]:
    cached = functools.lru_cache(maxsize=1024)(parse)

    @functools.wraps(parse)
    def read(value: str, what: str) -> T:
        return cached(value, what) if len(value) <= CACHED_VALUE_CHARS else parse(value, what)

    return read


def parse_via(value: str) -> list[Via]:
    """Every Via entry in one header line's value."""
    return list(_parse_vias(value, "Via"))


@_remembered
def _parse_vias(value: str, _what: str) -> tuple[Via, ...]:
    vias: list[Via] = []
    for entry in split_list(value):
        m = _abnf.sent_protocol.match(entry)
        if not m:
            raise SipParseError(f"Via: malformed sent-protocol in {entry[:40]!r}")
        if m.group("name").upper() != "SIP" or m.group("version") != "2.0":
            raise SipParseError(f"Via: protocol {m.group('name')}/{m.group('version')} is not SIP/2.0", status=505)
        rest = entry[m.end() :].lstrip(" \t")
        sb = _abnf.sent_by.match(rest)
        if not sb or not rest:
            raise SipParseError(f"Via: no sent-by host in {entry[:40]!r}")
        port = _port(sb.group("port"), "Via")
        params = parse_params(rest[sb.end() :], "Via")
        vias.append(Via(m.group("transport").upper(), sb.group("host"), port, params))
    if not vias:
        raise SipParseError("Via: empty")
    return tuple(vias)


def _port(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    port = int(text)
    if not 0 < port < 65536:
        raise SipParseError(f"{what}: port {text} out of range")
    return port


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To or Contact: optional display name, URI, header parameters (tag)."""

    uri: str
    display: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def tag(self) -> str | None:
        return _param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display, (*[(n, v) for n, v in self.params if n != "tag"], ("tag", tag)))

    def __str__(self) -> str:
        display = ""
        if self.display:
            display = '"{}" '.format(self.display.replace("\\", "\\\\").replace('"', '\\"'))
        return f"{display}<{self.uri}>" + _params_text(self.params)


def parse_name_addr(value: str, what: str = "name-addr") -> NameAddr:
    """`"Name" <sip:a@b>;tag=x`, `Name <sip:a@b>`, or `sip:a@b;tag=x` (addr-spec: parameters are the header's)."""
    return _parse_name_addr(value, what)


@_remembered
def _parse_name_addr(value: str, what: str) -> NameAddr:
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        m = re.match(_abnf.quoted_string, text)
        if not m:
            raise SipParseError(f"{what}: unterminated quoted display name")
        display = _unquote(m.group(0))
        text = text[m.end() :].lstrip(" \t")
        if not text.startswith("<"):
            raise SipParseError(f"{what}: display name without <uri>")
    lt = text.find("<")
    if lt >= 0:
        if display is None and lt > 0:
            display = text[:lt].strip() or None
            if display and not re.fullmatch(rf"{_abnf.token}(?:[ \t]+{_abnf.token})*", display):
                raise SipParseError(f"{what}: display name {display[:30]!r} is neither tokens nor quoted")
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError(f"{what}: '<' without '>'")
        uri = text[lt + 1 : gt].strip()
        rest = text[gt + 1 :]
    else:
        semi = text.find(";")
        uri, rest = (text, "") if semi < 0 else (text[:semi], text[semi:])
        uri = uri.strip()
    if not uri or not _ABSOLUTE_URI.fullmatch(uri):
        raise SipParseError(f"{what}: no URI in {value[:40]!r}")
    return NameAddr(uri, display, parse_params(rest, what))


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip:/sips: URI, as far as routing needs it."""

    scheme: str
    host: str
    user: str | None = None
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def transport(self) -> str | None:
        t = _param(self.params, "transport")
        return t.lower() if t else None

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}:{user}{self.host}{port}" + _params_text(self.params)


def parse_uri(text: str) -> SipUri:
    m = _abnf.SIP_URI.fullmatch(text.strip())
    if not m:
        raise SipParseError(f"not a sip: URI: {text[:60]!r}")
    params = parse_params(m.group("params") or "", "URI")
    return SipUri(m.group("scheme").lower(), m.group("host"), m.group("user"), _port(m.group("port"), "URI"), params)


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    return _parse_cseq(value, "CSeq")


@_remembered
def _parse_cseq(value: str, _what: str) -> CSeq:
    m = _abnf.CSeq.fullmatch(value.strip())
    if not m:
        raise SipParseError(f"CSeq: malformed {value[:40]!r}")
    digits = m.group("seq")
    if len(digits) > 10 or int(digits) > MAX_CSEQ:
        raise SipParseError(f"CSeq: sequence number {digits[:24]} is over 2**31-1")
    return CSeq(int(digits), m.group("method"))


# --- typed access to a parsed message ------------------------------------------------------------


def vias(msg: Message) -> list[Via]:
    out: list[Via] = []
    for value in msg.headers.get_all("Via"):
        out.extend(parse_via(value))
    return out


def top_via(msg: Message) -> Via:
    values = msg.headers.get_all("Via")
    if not values:
        raise SipParseError("no Via header")
    return parse_via(values[0])[0]


def cseq(msg: Message) -> CSeq:
    value = msg.headers.get("CSeq")
    if value is None:
        raise SipParseError("no CSeq header")
    return parse_cseq(value)


def from_(msg: Message) -> NameAddr:
    value = msg.headers.get("From")
    if value is None:
        raise SipParseError("no From header")
    return parse_name_addr(value, "From")


def to(msg: Message) -> NameAddr:
    value = msg.headers.get("To")
    if value is None:
        raise SipParseError("no To header")
    return parse_name_addr(value, "To")


def call_id(msg: Message) -> str:
    value = msg.headers.get("Call-ID")
    if value is None:
        raise SipParseError("no Call-ID header")
    return value


def contacts(msg: Message) -> list[NameAddr]:
    out: list[NameAddr] = []
    for value in msg.headers.get_all("Contact"):
        out.extend(parse_name_addr(v, "Contact") for v in split_list(value) if v != "*")
    return out


def content_type(msg: Message) -> str | None:
    """The media type without parameters, lower-cased (`application/scaip+xml`)."""
    value = msg.headers.get("Content-Type")
    return value.split(";", 1)[0].strip().lower() if value is not None else None


# --- parsing -------------------------------------------------------------------------------------


def _content_length(headers: Headers) -> int | None:
    values = {v.strip() for v in headers.get_all("Content-Length")}
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError(f"Content-Length given {len(values)} different values")
    text = values.pop()
    if not text.isdigit() or len(text) > 10:
        raise SipParseError(f"Content-Length: {text[:20]!r} is not a non-negative integer")
    length = int(text)
    if length > MAX_MESSAGE_BYTES:
        raise SipParseError(f"Content-Length {length} is over the {MAX_MESSAGE_BYTES}-byte bound", status=413)
    return length


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    m = _HEADER_END.search(data, 0, MAX_HEADER_BYTES + 4)
    if not m:
        if len(data) > MAX_HEADER_BYTES:
            raise SipParseError(f"header section over {MAX_HEADER_BYTES} bytes", status=413)
        raise SipParseError("no empty line after the headers")
    return data[: m.start()], data[m.end() :]


def _parse_head(head: bytes) -> tuple[str, Headers]:
    try:
        text = _abnf.obs_fold.sub(b" ", head).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header bytes are not UTF-8 (byte {exc.start})") from None
    if "\x00" in text:
        raise SipParseError("NUL byte in the headers")
    lines = _LINE_SPLIT.split(text)
    if any("\r" in line for line in lines):
        raise SipParseError("bare CR in the headers")
    if len(lines) - 1 > MAX_HEADERS:
        raise SipParseError(f"more than {MAX_HEADERS} header lines", status=413)
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        m = _abnf.header_field.fullmatch(line)
        if not m:
            raise SipParseError(f"malformed header line {line[:40]!r}")
        pairs.append((canonical_name(m.group("name")), m.group("value").strip(" \t")))
    return lines[0], Headers(tuple(pairs))


def parse_message(data: bytes, *, datagram: bool = True) -> Message:
    """One SIP message from `data` (a whole datagram, or one stream frame cut by `StreamReader`)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES}-byte bound", status=413)
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head, rest = _split_head(data)
    start, headers = _parse_head(head)
    length = _content_length(headers)
    if length is None:
        if not datagram:
            raise SipParseError("Content-Length is required on a stream (RFC 3261 18.3)")
        body = rest
    elif len(rest) < length:
        raise SipParseError(f"body of {len(rest)} bytes is shorter than Content-Length {length}")
    else:
        body = rest[:length]
    if (m := _abnf.Request_Line.fullmatch(start)) is not None:
        request = Request(m.group("method"), m.group("uri"), headers, body)
        if m.group("version").upper() != "SIP/2.0":
            raise SipParseError(f"version {m.group('version')} is not SIP/2.0", status=505, partial=request)
        _validate_request(request)
        return request
    if (m := _abnf.Status_Line.fullmatch(start)) is not None:
        if m.group("version").upper() != "SIP/2.0":
            raise SipParseError(f"version {m.group('version')} is not SIP/2.0", status=505)
        status = int(m.group("status"))
        if not 100 <= status <= 699:
            raise SipParseError(f"status code {status} is outside 100-699")
        response = Response(status, m.group("reason"), headers, body)
        _validate_common(response, REQUIRED_RESPONSE_HEADERS, None)
        return response
    raise SipParseError(f"first line is neither a request line nor a status line: {start[:60]!r}")


def _validate_common(msg: Message, required: tuple[str, ...], partial: Request | None) -> None:
    try:
        for name in required:
            if not msg.headers.get_all(name):
                raise SipParseError(f"missing mandatory header {name}")
        for name in SINGLE_HEADERS:
            if len(msg.headers.get_all(name)) > 1:
                raise SipParseError(f"{name} appears more than once")
        vias(msg)
        from_(msg)
        to(msg)
        cs = cseq(msg)
        if not _abnf.Call_ID.fullmatch(call_id(msg)):
            raise SipParseError(f"Call-ID: malformed {call_id(msg)[:40]!r}")
        if isinstance(msg, Request) and cs.method != msg.method:
            raise SipParseError(f"CSeq method {cs.method} differs from the request method {msg.method}")
        mf = msg.headers.get("Max-Forwards")
        if mf is not None and (not mf.isdigit() or len(mf) > 6 or int(mf) > 255):
            raise SipParseError(f"Max-Forwards: {mf[:20]!r} is not 0-255")
    except SipParseError as exc:
        raise SipParseError(exc.reason, status=exc.status, partial=partial) from None


def _validate_request(request: Request) -> None:
    _validate_common(request, REQUIRED_REQUEST_HEADERS, request)
    uri = request.uri
    if not _ABSOLUTE_URI.fullmatch(uri):
        raise SipParseError(f"Request-URI {uri[:60]!r} is not an absolute URI", partial=request)


class StreamReader:
    """Cuts a TCP/TLS byte stream into messages by Content-Length (leading CRLF keep-alives skipped).

    After a `SipParseError` the stream has lost its framing: the caller closes the connection.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def next_message(self) -> Message | None:
        """The next complete message, or None until more bytes arrive."""
        buf = self._buffer
        skip = 0
        while skip < len(buf) and buf[skip] in b"\r\n":
            skip += 1
        if skip:
            del buf[:skip]
        if not buf:
            return None
        m = _HEADER_END.search(buf, 0, MAX_HEADER_BYTES + 4)
        if not m:
            if len(buf) > MAX_HEADER_BYTES:
                raise SipParseError(f"header section over {MAX_HEADER_BYTES} bytes", status=413)
            return None
        _, headers = _parse_head(bytes(buf[: m.start()]))
        length = _content_length(headers)
        if length is None:
            raise SipParseError("Content-Length is required on a stream (RFC 3261 18.3)")
        end = m.end() + length
        if len(buf) < end:
            return None
        frame = bytes(buf[:end])
        del buf[:end]
        return parse_message(frame, datagram=False)


# --- writing -------------------------------------------------------------------------------------


def serialize(msg: Message) -> bytes:
    """Wire bytes; Content-Length is always written, and always right."""
    start = f"{msg.method} {msg.uri} SIP/2.0" if isinstance(msg, Request) else f"SIP/2.0 {msg.status} {msg.reason}"
    headers = msg.headers.replace("Content-Length", str(len(msg.body)))
    lines = [start, *(f"{n}: {v}" for n, v in headers)]
    for n, v in headers:
        if "\r" in v or "\n" in v or "\r" in n or "\n" in n:
            raise ValueError(f"header {n} holds a line break")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + msg.body


def new_branch() -> str:
    """A fresh RFC 3261 branch (magic cookie + 96 random bits)."""
    return _abnf.MAGIC_COOKIE + secrets.token_hex(12)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


def make_request(
    method: str,
    uri: str,
    *,
    via: Via,
    from_addr: NameAddr,
    to_addr: NameAddr,
    call_id_: str,
    cseq_: int,
    body: bytes = b"",
    content_type_: str | None = None,
    max_forwards: int = 70,
    extra: Iterable[tuple[str, str]] = (),
) -> Request:
    """A request as RFC 3261 8.1.1 builds it (Via with a branch, tags, Max-Forwards)."""
    pairs = [
        ("Via", str(via)),
        ("Max-Forwards", str(max_forwards)),
        ("From", str(from_addr)),
        ("To", str(to_addr)),
        ("Call-ID", call_id_),
        ("CSeq", f"{cseq_} {method}"),
        *extra,
    ]
    if content_type_ is not None:
        pairs.append(("Content-Type", content_type_))
    return Request(method, uri, Headers.of(pairs), body)


def make_response(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    body: bytes = b"",
    content_type_: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
) -> Response:
    """A response to `request` as RFC 3261 8.2.6 builds it: Via, From, Call-ID, CSeq copied; To tagged."""
    pairs: list[tuple[str, str]] = [(n, v) for n, v in request.headers if n == "Via"]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            raise SipParseError(f"cannot answer a request without {name}")
        if name == "To" and to_tag is not None and status > 100:
            try:
                addr = parse_name_addr(value, "To")
            except SipParseError:
                addr = None
            if addr is not None and addr.tag is None:
                value = str(addr.with_tag(to_tag))
        pairs.append((name, value))
    pairs.extend(extra)
    if content_type_ is not None:
        pairs.append(("Content-Type", content_type_))
    return Response(status, reason, Headers.of(pairs), body)


REASONS = {
    100: "Trying",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    481: "Call/Transaction Does Not Exist",
    483: "Too Many Hops",
    486: "Busy Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
}


def list_header_values(msg: Message, name: str) -> list[str]:
    """Entries of a list header across all its lines (`Via: a, b` + `Via: c` -> [a, b, c])."""
    name = canonical_name(name)
    out: list[str] = []
    for value in msg.headers.get_all(name):
        out.extend(split_list(value) if name in LIST_HEADERS else [value])
    return out
