"""Serial profiles: checksums against published check values, the shipped profiles' documented frames,
framing bounds, bad profile files (each message names file:line), and malformed input (only events or
ProtocolError)."""

from __future__ import annotations

import binascii
import json
import subprocess
import sys
import textwrap
from functools import reduce
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.errors import InputError
from harness.protocols.base import ProtocolError
from harness.protocols.serial_profile import (
    CRC16_ARC,
    CRC16_CCITT_FALSE,
    CRC16_KERMIT,
    CRC16_MODBUS,
    CRC16_XMODEM,
    LineFramer,
    LineFraming,
    ProfileCodec,
    Refused,
    SentinelFramer,
    SentinelFraming,
    contact_id_check,
    load_profile,
    sum8,
    xor8,
)
from harness.protocols.serial_tool import main as tool_main

ROOT = Path(__file__).resolve().parents[3]
PROFILES = ROOT / "fixtures" / "profiles"
DISPENSER = PROFILES / "medicine_dispenser.yaml"
CID_PRINTER = PROFILES / "contact_id_printer.yaml"
CHECK = b"123456789"
LOADED = {DISPENSER: load_profile(DISPENSER), CID_PRINTER: load_profile(CID_PRINTER)}


# ---- checksums: published check values --------------------------------------------------------------


@pytest.mark.parametrize(
    ("crc", "check"),
    [
        # CRC RevEng catalogue ("check" = CRC of the ASCII string 123456789)
        (CRC16_ARC, 0xBB3D),
        (CRC16_CCITT_FALSE, 0x29B1),
        (CRC16_XMODEM, 0x31C3),
        (CRC16_MODBUS, 0x4B37),
        (CRC16_KERMIT, 0x2189),
    ],
    ids=lambda v: getattr(v, "name", hex(v) if isinstance(v, int) else str(v)),
)
def test_crc16_check_values_from_the_reveng_catalogue(crc, check):
    assert crc(CHECK) == check


@pytest.mark.parametrize(
    ("frame", "crc_bytes"),
    [("01 03 00 00 00 0A", "C5 CD"), ("01 03 00 00 00 01", "84 0A")],  # Modbus RTU read-holding-registers requests
)
def test_crc16_modbus_on_published_modbus_rtu_frames(frame, crc_bytes):
    assert CRC16_MODBUS(bytes.fromhex(frame)).to_bytes(2, "little") == bytes.fromhex(crc_bytes)


def test_xor8_on_the_classic_nmea_gga_sentence():
    # $GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47 (the NMEA 0183 example sentence)
    assert xor8(b"GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,") == 0x47


@given(st.binary(max_size=200))
def test_crc16_ccitt_false_and_xmodem_agree_with_binascii(data):
    # binascii.crc_hqx is CPython's independent CRC-CCITT (poly 0x1021, no reflection)
    assert CRC16_CCITT_FALSE(data) == binascii.crc_hqx(data, 0xFFFF)
    assert CRC16_XMODEM(data) == binascii.crc_hqx(data, 0)


@given(st.binary(max_size=200))
def test_xor8_and_sum8_agree_with_their_definitions(data):
    assert xor8(data) == reduce(lambda a, b: a ^ b, data, 0)
    assert sum8(data) == sum(data) % 256


def _cid_value(c: str) -> int:
    """The rule as PROTOCOLS.md §3 states it, written independently of the codec."""
    return 10 if c == "0" else int(c, 16)


@pytest.mark.parametrize(
    ("digits", "check"),
    [
        ("567818110101015", 15),  # 5678 18 1 101 01 015: digit sum 75, already a multiple of 15 -> F
        ("123418130200000", 5),  # 1234 18 1 302 00 000: digit sum 85 -> 5
        ("123418113101015", 8),  # 1234 18 1 131 01 015: digit sum 52 -> 8
    ],
)
def test_contact_id_check_digit_worked_examples(digits, check):
    assert contact_id_check(digits.encode()) == check
    assert (sum(_cid_value(c) for c in digits) + check) % 15 == 0


@given(st.text(alphabet="0123456789BCDEF", min_size=1, max_size=20))
def test_contact_id_check_satisfies_the_mod_15_rule(digits):
    s = contact_id_check(digits.encode())
    assert 1 <= s <= 15
    assert (sum(_cid_value(c) for c in digits) + s) % 15 == 0


def test_contact_id_check_refuses_non_digits():
    with pytest.raises(ProtocolError, match="not a Contact ID digit"):
        contact_id_check(b"12A4")


# ---- the shipped profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_shipped_profile_decodes_its_documented_examples(path):
    codec = ProfileCodec.from_file(path)
    assert codec.profile.examples, "every shipped profile documents example frames"
    for example in codec.profile.examples:
        event = codec.decode_frame(example.wire)
        assert event.event == example.event
        for key, value in example.fields.items():
            assert event.fields[key] == value


@pytest.mark.parametrize("path", sorted(PROFILES.glob("*.yaml")), ids=lambda p: p.stem)
def test_each_shipped_profile_writes_its_examples_byte_for_byte(path):
    codec = ProfileCodec.from_file(path)
    for example in codec.profile.examples:
        if example.event not in codec.event_names:
            continue  # a templated event name (contact_id_1131) is read, never written
        decoded = codec.decode_frame(example.wire)
        wire = codec.encode(example.event, dict(decoded.fields))
        assert wire.rstrip(b"\r\n") == example.wire


def test_dispenser_profile_has_every_event_the_brief_names_with_its_codes():
    codec = ProfileCodec.from_file(DISPENSER)
    wanted = {
        "dose_due",
        "dose_taken",
        "dose_missed",
        "tamper",
        "lid_open",
        "low_battery",
        "power_lost",
        "power_restored",
    }
    assert wanted <= set(codec.event_names)
    for name in codec.event_names:
        event = codec.feed(codec.encode(name, {"seq": "0042"}))[0]
        assert event.event == name
        assert event.fields["seq"] == "0042"
    taken = codec.feed(codec.encode("dose_taken"))[0]
    assert taken.scaip_stc == "0083"
    restored = codec.feed(codec.encode("power_restored"))[0]
    assert (restored.contact_id, restored.qualifier, restored.scaip_stc) == ("301", "3", "0086")


def test_dispenser_checksum_is_the_nmea_xor_between_dollar_and_star():
    frame = ProfileCodec.from_file(DISPENSER).encode("dose_missed", {"slot": "07"})
    text = frame.decode("ascii")
    assert text.endswith("\r\n")
    body, checksum = text[1:].rstrip("\r\n").split("*")
    assert int(checksum, 16) == reduce(lambda a, c: a ^ ord(c), body, 0)


def test_dispenser_bad_checksum_is_a_protocol_error():
    codec = ProfileCodec.from_file(DISPENSER)
    with pytest.raises(ProtocolError, match="bad checksum"):
        codec.feed(b"$MD,DSP00042,0001,DUE,03,087*3E\r\n")
    with pytest.raises(ProtocolError, match="upper case"):
        codec.feed(b"$MD,DSP00042,0005,LID,00,086*2e\r\n")


def test_contact_id_printer_reads_a_printed_line_and_unknown_codes():
    codec = ProfileCodec.from_file(CID_PRINTER)
    [event] = codec.feed(b"5678 18 1 101 01 015 F\r\n")
    assert (event.event, event.contact_id, event.qualifier) == ("personal_emergency", "101", "1")
    assert event.fields["zone"] == "015"
    [other] = codec.feed(codec.encode("personal_emergency", {"code": "101"}))
    assert other.event == "personal_emergency"
    with pytest.raises(ProtocolError, match="bad checksum"):
        codec.feed(b"5678 18 1 101 01 015 1\n")


def test_feed_keeps_order_around_a_bad_frame():
    codec = ProfileCodec.from_file(CID_PRINTER)
    good1 = codec.encode("personal_emergency")
    good2 = codec.encode("low_battery")
    events = codec.feed(good1 + b"5678 18 1 101 01 015 1\n" + good2)
    assert [e.event for e in events] == ["personal_emergency"]
    assert codec.has_pending
    with pytest.raises(ProtocolError):
        codec.feed(b"")
    assert [e.event for e in codec.feed(b"")] == ["low_battery"]
    assert not codec.has_pending


def test_encode_refuses_unknown_events_and_unreadable_fields():
    codec = ProfileCodec.from_file(DISPENSER)
    with pytest.raises(InputError, match="no event 'fall'"):
        codec.encode("fall")
    with pytest.raises(InputError, match="cannot read back"):
        codec.encode("dose_taken", {"slot": "3,4"})


# ---- other framings: sentinel with checksum after ETX, length-prefixed binary ----------------------------


def _profile(tmp_path: Path, text: str, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


def test_sentinel_framing_with_sum8_after_etx_astm_style(tmp_path):
    # ASTM E1381 style: <STX> text <ETX> C1 C2, checksum sum mod 256 over the text and the ETX
    path = _profile(
        tmp_path,
        """
        name: astm_like
        framing: {kind: sentinel, start: 0x02, end: 0x03, trailer: 2}
        checksum: {algorithm: sum8, place: after_end, covers: frame, skip: 1}
        fields:
          regex: '(?P<frame_no>[0-7])(?P<kind>[A-Z])\\|(?P<text>[^|]*)'
          template: "{frame_no}{kind}|{text}"
        events:
          - {when: {kind: R}, event: result}
    """,
    )
    codec = ProfileCodec.from_file(path)
    wire = codec.encode("result", {"frame_no": "1", "text": "SpO2 97"})
    body = b"1R|SpO2 97"
    assert wire == b"\x02" + body + b"\x03" + f"{(sum(body) + 3) % 256:02X}".encode()
    noise = b"\xffnoise"
    out = codec.feed_all(noise + wire + wire[:-1] + b"0")
    assert isinstance(out[0], ProtocolError) and "outside a frame" in out[0].reason
    assert out[1].event == "result"
    assert isinstance(out[2], ProtocolError) and "checksum" in out[2].reason


def test_length_framing_binary_fields_and_modbus_crc(tmp_path):
    path = _profile(
        tmp_path,
        """
        name: binary_sensor
        framing: {kind: length, sync: "AA55", length_size: 1}
        encoding: binary
        checksum: {algorithm: crc16_modbus, format: binary, endian: little, covers: frame}
        fields:
          positions:
            - {name: device, start: 0, length: 2, type: hex}
            - {name: code, start: 2, length: 1, type: int}
        events:
          - {when: {code: "1"}, event: button_press, contact_id: "101", qualifier: "1"}
    """,
    )
    codec = ProfileCodec.from_file(path)
    wire = codec.encode("button_press", {"device": "BEEF"})
    head = b"\xaa\x55\x05\xbe\xef\x01"
    assert wire == head + CRC16_MODBUS(head).to_bytes(2, "little")
    out = codec.feed_all(b"\x00\x01" + wire)
    assert isinstance(out[0], ProtocolError) and "no sync" in out[0].reason
    assert out[1].event == "button_press" and out[1].fields["device"] == "BEEF"
    with pytest.raises(ProtocolError, match="bad checksum"):
        codec.feed(wire[:-1] + bytes([wire[-1] ^ 0xFF]))


def test_python_hook_reads_unusual_frames(tmp_path, monkeypatch):
    (tmp_path / "vendor_hook.py").write_text(
        textwrap.dedent("""
        def fields(body):
            kind, _, rest = body.partition(b"/")
            if not rest:
                raise ValueError("no slash")
            return {"kind": kind.decode(), "value": rest.decode()}

        def write(fields):
            return f"{fields['kind']}/{fields['value']}".encode()
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = _profile(
        tmp_path,
        """
        name: hooked
        framing: {kind: line}
        fields: {hook: "vendor_hook:fields", encode_hook: "vendor_hook.write", names: [kind, value]}
        events:
          - {when: {kind: T}, event: temperature}
    """,
    )
    codec = ProfileCodec.from_file(path)
    [event] = codec.feed(b"T/21.5\n")
    assert event.fields == {"kind": "T", "value": "21.5"}
    assert codec.encode("temperature", {"value": "22"}) == b"T/22\n"
    with pytest.raises(ProtocolError, match="hook vendor_hook:fields could not read"):
        codec.feed(b"garbage\n")


# ---- framers are bounded ---------------------------------------------------------------------------------


def test_line_framer_cuts_off_a_flood_once_and_resynchronises():
    framer = LineFramer(LineFraming(kind="line", max_frame=16))
    out = []
    for _ in range(100):
        out += framer.push(b"A" * 50)
        assert framer.pending <= 16
    out += framer.push(b"tail\nok\n")
    assert [type(x) for x in out] == [Refused, bytes]
    assert out[-1] == b"ok"


def test_sentinel_framer_reports_garbage_and_restarted_frames():
    framer = SentinelFramer(SentinelFraming(kind="sentinel", max_frame=32))
    out = framer.push(b"xx\x02abc\x02def\x03")
    assert isinstance(out[0], Refused) and "before STX" in out[0].reason
    assert isinstance(out[1], Refused) and "restarted" in out[1].reason
    assert out[2] == b"\x02def\x03"


# ---- bad profile files: each message names the file and line --------------------------------------------

GOOD = """\
name: t
framing: {kind: line}
fields:
  regex: '(?P<code>[0-9]{3})'
  template: "{code}"
events:
  - {when: {code: "101"}, event: personal_emergency}
"""


@pytest.mark.parametrize(
    ("replace", "line", "message"),
    [
        (("name: t", "name: t\ncolour: red"), 2, "unknown key `colour`"),
        (("(?P<code>[0-9]{3})", "(?P<code>[0-9]{3}"), 4, "regex does not compile"),
        (("(?P<code>[0-9]{3})", "([0-9]{3})"), 4, "no named groups"),
        (('template: "{code}"', 'template: "{zone}"'), 5, "template names `zone`"),
        (('{code: "101"}', "{code: 101}"), 7, 'quote it: "101"'),
        (('{code: "101"}', '{zone: "101"}'), 7, "tests field `zone`"),
        (("{kind: line}", "{kind: wire}"), 2, "framing"),
        (("{kind: line}", '{kind: line, terminator: ""}'), 2, "terminator"),
        (("{kind: line}", "{kind: line, terminator: '\\q'}"), 2, "unknown escape"),
        (("name: t", "name: t\nchecksum: {algorithm: crc99}"), 2, "algorithm"),
        (("name: t", "name: t\nchecksum:\n  algorithm: xor8\n  place: after_end"), 4, "needs sentinel framing"),
        (("regex: '(?P<code>[0-9]{3})'", "hook: no_such_module_here:f"), 4, "cannot be imported"),
        (("events:\n  - {when", "events:\n  - {when: [}"), 7, "malformed YAML"),
    ],
    ids=[
        "unknown-key",
        "regex",
        "no-groups",
        "template",
        "unquoted-number",
        "when-field",
        "framing-kind",
        "terminator",
        "escape",
        "checksum-name",
        "after-end",
        "hook",
        "yaml-syntax",
    ],
)
def test_bad_profile_names_file_and_line(tmp_path, replace, line, message):
    text = GOOD.replace(*replace)
    assert text != GOOD
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_profile(path)
    assert str(info.value.place) == f"{path}:{line}", info.value.message
    assert message in info.value.message
    assert info.value.fix


def test_good_template_profile_loads(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD, encoding="utf-8")
    assert load_profile(path).name == "t"


def test_missing_profile_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_profile(tmp_path / "nope.yaml")


# ---- malformed input: only events or ProtocolError -------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([DISPENSER, CID_PRINTER]))
def test_random_bytes_give_only_events_or_protocol_errors(data, path):
    codec = ProfileCodec(LOADED[path])
    for item in codec.feed_all(data):
        assert isinstance(item, ProtocolError) or item.event


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from([DISPENSER, CID_PRINTER]))
def test_one_changed_byte_never_decodes_as_an_event(data, path):
    codec = ProfileCodec(LOADED[path])
    name = data.draw(st.sampled_from(codec.event_names))
    wire = bytearray(codec.encode(name))
    i = data.draw(st.integers(0, len(wire) - 1))
    new = data.draw(st.integers(0, 255).filter(lambda b: b != wire[i]))
    wire[i] = new
    try:
        events = codec.feed(bytes(wire))
    except ProtocolError:
        return
    assert events == [], f"{bytes(wire)!r} decoded despite the changed byte"


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_streams_keep_the_codec_usable(data):
    codec = ProfileCodec(LOADED[DISPENSER])
    frames = b"".join(codec.encode(n) for n in codec.event_names)
    mutated = bytearray(frames)
    for _ in range(data.draw(st.integers(1, 8))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        i = data.draw(st.integers(0, max(0, len(mutated) - 1)))
        if op == "flip" and mutated:
            mutated[i] ^= 1 << data.draw(st.integers(0, 7))
        elif op == "insert":
            mutated[i:i] = data.draw(st.binary(min_size=1, max_size=4))
        elif mutated:
            del mutated[i]
    for item in codec.feed_all(bytes(mutated)):
        assert isinstance(item, ProtocolError) or item.event in codec.event_names
    # after the noise the codec still reads a clean frame
    codec.framer.take_partial()
    assert [e.event for e in codec.feed(codec.encode("dose_taken"))] == ["dose_taken"]


# ---- the decode tool --------------------------------------------------------------------------------------


def test_decode_tool_prints_events_and_refusals_as_json(capsys):
    good = ProfileCodec.from_file(DISPENSER).encode("dose_taken")
    rc = tool_main(["decode", "--profile", str(DISPENSER), (good + b"$MD,bad*00\r\n").hex(" ")])
    out = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert [e["event"] for e in out["events"]] == ["dose_taken"]
    assert out["events"][0]["scaip_stc"] == "0083"
    assert len(out["refused"]) == 1 and out["refused"][0]["raw_hex"] == b"$MD,bad*00".hex()


def test_decode_tool_reads_a_capture_file_and_bad_input_exits_2(tmp_path, capsys):
    capture = tmp_path / "capture.bin"
    capture.write_bytes(b"5678 18 1 101 01 015 F\r\n1234 18 1 302 00 000 5\r\n")
    assert tool_main(["decode", "--profile", str(CID_PRINTER), str(capture)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [e["event"] for e in out["events"]] == ["personal_emergency", "low_battery"]
    assert tool_main(["decode", "--profile", str(CID_PRINTER), "not hex at all"]) == 2
    assert "neither a file nor hex" in capsys.readouterr().err


def test_tool_runs_as_a_module_and_encodes():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.protocols.serial_tool",
            "encode",
            "--profile",
            str(CID_PRINTER),
            "personal_emergency",
            "--field",
            "zone=015",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["text"] == "5678 18 1 101 01 015 F\n"
