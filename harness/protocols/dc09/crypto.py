"""DC-09 encryption: AES-CBC with a zero IV over `pad|data]...timestamp`, sent as upper-case hex.

The key is 16, 24 or 32 bytes (AES-128/192/256). The plaintext is padded at the FRONT to a multiple of 16
with characters that are not `|`, `[` or `]`, so a receiver finds the data after the first `|`.
Implementations differ in the padding: dc09-spt and others use random printable characters, pysiaalarm uses
ASCII zeros (`str.zfill`); both are produced here and any pad is accepted. pysiaalarm's own encrypted ACK
has no `|` after its pad (`000...]_timestamp`): `split_pad` accepts that too.
"""

from __future__ import annotations

import binascii
import random
import secrets
from typing import Literal

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from harness.protocols.base import ProtocolError

PROTOCOL = "dc09"
Padding = Literal["random", "zeros"]
KEY_SIZES = (16, 24, 32)
_ZERO_IV = bytes(16)
# printable ASCII without the three characters that delimit the data
_PAD_ALPHABET = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "|[]")


def check_key(key: bytes) -> bytes:
    if len(key) not in KEY_SIZES:
        raise ValueError(f"DC-09 AES key must be 16, 24 or 32 bytes, not {len(key)}")
    return key


def pad_text(text: str, padding: Padding = "random", rng: random.Random | None = None) -> str:
    """`pad + text` with 1..16 pad characters so the length is a multiple of 16 (as dc09-spt and pysiaalarm)."""
    n = 16 - len(text) % 16
    if padding == "zeros":
        pad = "0" * n
    elif rng is not None:
        pad = "".join(rng.choice(_PAD_ALPHABET) for _ in range(n))
    else:
        pad = "".join(secrets.choice(_PAD_ALPHABET) for _ in range(n))
    return pad + text


def encrypt_hex(plaintext: str, key: bytes) -> str:
    """AES-CBC (zero IV) of an already padded ASCII plaintext, as upper-case hex."""
    raw = plaintext.encode("ascii")
    if len(raw) % 16:
        raise ValueError("DC-09 plaintext must be padded to a multiple of 16 bytes")
    enc = Cipher(algorithms.AES(check_key(key)), modes.CBC(_ZERO_IV)).encryptor()
    return (enc.update(raw) + enc.finalize()).hex().upper()


def decrypt_hex(hex_text: str, key: bytes) -> str:
    """Decrypt upper- or lower-case hex ciphertext; the result must be ASCII (else the key is wrong)."""
    if len(hex_text) == 0 or len(hex_text) % 32:
        raise ProtocolError(PROTOCOL, f"encrypted part of {len(hex_text)} hex digits is not whole AES blocks")
    try:
        raw = binascii.unhexlify(hex_text)
    except (binascii.Error, ValueError):
        raise ProtocolError(PROTOCOL, "encrypted part is not hex") from None
    dec = Cipher(algorithms.AES(check_key(key)), modes.CBC(_ZERO_IV)).decryptor()
    plain = dec.update(raw) + dec.finalize()
    try:
        return plain.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(PROTOCOL, "cannot decrypt: plaintext is not ASCII (wrong key?)") from None


def split_pad(plaintext: str) -> tuple[str, str]:
    """(pad, rest): the pad runs to the first `|` (dropped) or, when `]` comes first, to that `]` (kept)."""
    for i, ch in enumerate(plaintext):
        if ch == "|":
            return plaintext[:i], plaintext[i + 1 :]
        if ch == "]":
            return plaintext[:i], plaintext[i:]
        if ch == "[":
            break
    raise ProtocolError(PROTOCOL, "cannot decrypt: no '|' or ']' after the pad (wrong key?)")
