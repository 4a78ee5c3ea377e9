"""Digest authentication against the worked examples of RFC 2617 (3.5) and RFC 7616 (3.9.1), and the
MESSAGE retry a 401/407 asks for."""

from __future__ import annotations

import pytest

from harness.protocols.base import ProtocolError
from harness.protocols.sip import Request, digest, parse_message, serialize
from harness.protocols.sip import message as m

RFC7616 = {
    "username": "Mufasa",
    "password": "Circle of Life",
    "realm": "http-auth@example.org",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "opaque": "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
}


def test_rfc2617_md5_example() -> None:
    got = digest.response_digest(
        algorithm="MD5", username="Mufasa", realm="testrealm@host.com", password="Circle Of Life", method="GET",
        uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", nc="00000001", cnonce="0a4f113b", qop="auth",
    )  # fmt: skip
    assert got == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_examples(algorithm: str, expected: str) -> None:
    got = digest.response_digest(
        algorithm=algorithm, username=RFC7616["username"], realm=RFC7616["realm"], password=RFC7616["password"],
        method="GET", uri="/dir/index.html", nonce=RFC7616["nonce"], nc="00000001", cnonce=RFC7616["cnonce"],
        qop="auth",
    )  # fmt: skip
    assert got == expected


def test_rfc7616_authorization_header_verifies() -> None:
    """The Authorization header printed in RFC 7616 3.9.1 (SHA-256) is accepted by the server side."""
    header = (
        'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", algorithm=SHA-256, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
        'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
        'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    ok = {"Mufasa": "Circle of Life"}.get
    assert (
        digest.verify(header, method="GET", realm=RFC7616["realm"], password_for=ok, nonce_ok=lambda n: True)
        == "Mufasa"
    )
    wrong = {"Mufasa": "Circle Of Life"}.get
    assert (
        digest.verify(header, method="GET", realm=RFC7616["realm"], password_for=wrong, nonce_ok=lambda n: True) is None
    )
    assert (
        digest.verify(header, method="GET", realm=RFC7616["realm"], password_for=ok, nonce_ok=lambda n: False) is None
    )
    assert (
        digest.verify(header, method="POST", realm=RFC7616["realm"], password_for=ok, nonce_ok=lambda n: True) is None
    )


def test_authorization_we_write_matches_the_rfc_example() -> None:
    challenge = digest.parse_challenge(
        f'Digest realm="{RFC7616["realm"]}", qop="auth, auth-int", algorithm=SHA-256, '
        f'nonce="{RFC7616["nonce"]}", opaque="{RFC7616["opaque"]}"'
    )
    assert challenge.qop == ("auth", "auth-int") and challenge.algorithm == "SHA-256"
    value = digest.authorization(challenge, username="Mufasa", password="Circle of Life", method="GET",
                                 uri="/dir/index.html", cnonce=RFC7616["cnonce"])  # fmt: skip
    _, params = digest.parse_auth_params(value)
    assert params["response"] == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert (params["qop"], params["nc"], params["opaque"]) == ("auth", "00000001", RFC7616["opaque"])


def test_challenges_prefer_sha256_and_skip_unknown_algorithms() -> None:
    resp = parse_message(
        b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n"
        b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 MESSAGE\r\n"
        b'WWW-Authenticate: Digest realm="r", nonce="n1", algorithm=MD5, qop="auth"\r\n'
        b'WWW-Authenticate: Digest realm="r", nonce="n2", algorithm=SHA-512-256, qop="auth"\r\n'
        b'WWW-Authenticate: Digest realm="r", nonce="n3", algorithm=SHA-256, qop="auth"\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    assert [c.nonce for c in digest.challenges(resp)] == ["n3", "n1"]  # type: ignore[arg-type]


def test_authorize_makes_a_new_transaction_with_credentials() -> None:
    req = parse_message(
        b"MESSAGE sip:scaip@rc.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKfirst;rport\r\n"
        b"From: <sip:4711@10.0.0.1>;tag=1\r\nTo: <sip:scaip@rc.example>\r\nCall-ID: a@10.0.0.1\r\nCSeq: 5 MESSAGE\r\n"
        b"Content-Type: application/scaip+xml\r\nContent-Length: 5\r\n\r\n<a/>\n"
    )
    assert isinstance(req, Request)
    challenge = digest.parse_challenge('Digest realm="rc", nonce="abc", qop="auth"', proxy=True)
    again = digest.authorize(req, challenge, username="4711", password="pw", cnonce="c1", branch="z9hG4bKsecond")
    parsed = parse_message(serialize(again))
    assert m.cseq(parsed) == m.CSeq(6, "MESSAGE")
    assert m.top_via(parsed).branch == "z9hG4bKsecond"
    assert m.call_id(parsed) == "a@10.0.0.1" and parsed.body == req.body
    value = parsed.headers.get("Proxy-Authorization")
    assert value is not None
    user = digest.verify(
        value, method="MESSAGE", realm="rc", password_for={"4711": "pw"}.get, nonce_ok={"abc"}.__contains__
    )
    assert user == "4711"


@pytest.mark.parametrize(
    "value",
    [
        "Basic realm=x",
        'Digest realm="r"',
        "Digest nonce=1",
        "",
        'Digest realm="r", nonce',
        'Digest realm="r", nonce="n", algorithm=ROT13',
    ],
)
def test_bad_challenges(value: str) -> None:
    with pytest.raises(ProtocolError):
        ch = digest.parse_challenge(value)
        digest.authorization(ch, username="u", password="p", method="MESSAGE", uri="sip:x", cnonce="c")
