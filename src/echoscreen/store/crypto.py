"""Envelope encryption of one object: a fresh AES-256-GCM data key, wrapped by a KeyProvider.

Byte layout of an object file (format version 1; all lengths big-endian)::

    offset      size  field
    0           4     magic  b"ECSO"
    4           1     format version (1)
    5           1     k = length of the KEK id
    6           k     KEK id (ASCII)
    6+k         2     w = length of the wrapped data key
    8+k         w     wrapped data key (opaque to the store; the KeyProvider's format)
    8+k+w       12    nonce (random, 96 bits)
    20+k+w      n+16  AES-256-GCM ciphertext of the n plaintext bytes, then the 16-byte tag

The ciphertext's associated data is ``b"echoscreen-object|" + version + b"|" + object id``:
an object copied to another id, or read as another format version, fails to
authenticate. The KEK id is bound inside the *wrap* (see :mod:`.keys`), not in the
body's associated data, so :func:`rewrap` can move an object to a new KEK by
rewriting only the header, without re-encrypting the body.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from echoscreen.errors import IntegrityError, StoreError
from echoscreen.store.keys import KeyProvider

MAGIC = b"ECSO"
VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
DATA_KEY_BYTES = 32


@dataclass(frozen=True)
class Header:
    """The parsed header of an object file.

    Attributes:
        version: format version.
        key_id: id of the KEK the data key is wrapped under.
        wrapped: the wrapped data key.
        nonce: the body's 12-byte GCM nonce.
        body_offset: where the ciphertext starts in the file, in bytes.
    """

    version: int
    key_id: str
    wrapped: bytes
    nonce: bytes
    body_offset: int


def associated_data(oid: str, version: int = VERSION) -> bytes:
    """The associated data that binds a body to its object id and format version."""
    return b"echoscreen-object|" + bytes([version]) + b"|" + oid.encode("ascii")


def encode_header(key_id: str, wrapped: bytes, nonce: bytes) -> bytes:
    """Serialise a version-1 header (everything before the ciphertext)."""
    kid = key_id.encode("ascii")
    if not 0 < len(kid) < 256 or len(wrapped) > 0xFFFF or len(nonce) != NONCE_BYTES:
        raise StoreError(f"cannot encode header: key id {key_id!r}, wrapped {len(wrapped)} bytes")
    return (
        MAGIC + bytes([VERSION, len(kid)]) + kid + struct.pack(">H", len(wrapped)) + wrapped + nonce
    )


def parse_header(blob: bytes | bytearray | memoryview) -> Header:
    """Parse the header of an object file.

    Raises:
        IntegrityError: the bytes are not a well-formed version-1 object.
    """
    if len(blob) < 8 or blob[:4] != MAGIC:
        raise IntegrityError("not an echoscreen object (bad magic): the file was altered")
    version, klen = blob[4], blob[5]
    if version != VERSION:
        raise IntegrityError(f"unknown object format version {version}: the file was altered")
    pos = 6 + klen
    try:
        key_id = bytes(blob[6:pos]).decode("ascii")
    except UnicodeDecodeError as exc:
        raise IntegrityError("object header has a non-ASCII key id: the file was altered") from exc
    if len(blob) < pos + 2:
        raise IntegrityError("object header is truncated")
    (wlen,) = struct.unpack(">H", blob[pos : pos + 2])
    wrapped = bytes(blob[pos + 2 : pos + 2 + wlen])
    nonce_at = pos + 2 + wlen
    body_offset = nonce_at + NONCE_BYTES
    if len(blob) < body_offset + TAG_BYTES:
        raise IntegrityError("object is truncated (shorter than its header and tag)")
    return Header(version, key_id, wrapped, bytes(blob[nonce_at:body_offset]), body_offset)


def seal(data: bytes, oid: str, keys: KeyProvider) -> bytes:
    """Encrypt ``data`` for object ``oid`` under a fresh data key.

    Args:
        data: plaintext bytes.
        oid: the object id the ciphertext is bound to.
        keys: wraps the fresh data key.

    Returns:
        the complete object file bytes (header + ciphertext + tag).
    """
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    nonce = os.urandom(NONCE_BYTES)
    key_id, wrapped = keys.wrap(data_key)
    body = AESGCM(data_key).encrypt(nonce, data, associated_data(oid))
    return encode_header(key_id, wrapped, nonce) + body


def unwrap_key(header: Header, keys: KeyProvider) -> bytes:
    """Recover an object's data key; an unknown KEK id counts as tampering or key loss."""
    try:
        data_key = keys.unwrap(header.key_id, header.wrapped)
    except IntegrityError:
        raise
    except StoreError as exc:
        raise IntegrityError(
            f"cannot unwrap the data key: {exc} (or the object header was altered)"
        ) from exc
    if len(data_key) != DATA_KEY_BYTES:
        raise IntegrityError("unwrapped data key has the wrong length")
    return data_key


def open_sealed(blob: bytes | bytearray | memoryview, oid: str, keys: KeyProvider) -> memoryview:
    """Decrypt and authenticate an object file held in ``blob`` into a new plaintext buffer.

    The training read path: the plaintext buffer is allocated uninitialised (no
    zero-fill), the body is decrypted straight into it, and the AES-GCM work runs with
    the GIL released (OpenSSL through ``update_into``), so several threads decrypt
    clips in parallel. ``blob`` is only read (``cryptography`` refuses overlapping input
    and output buffers since 51.0), so a caller may reuse it for the next file.

    Returns:
        a read-only view of the plaintext (it owns its buffer).

    Raises:
        IntegrityError: any byte of header or body was altered, or the file belongs
            to another object id.
    """
    header = parse_header(blob)
    data_key = unwrap_key(header, keys)
    view = memoryview(blob)
    end = len(view) - TAG_BYTES
    # update_into wants room for one block more than its input on older cryptography
    out: memoryview = np.empty(end - header.body_offset + 15, dtype=np.uint8).data
    dec = Cipher(algorithms.AES(data_key), modes.GCM(header.nonce, bytes(view[end:]))).decryptor()
    dec.authenticate_additional_data(associated_data(oid, header.version))
    n = dec.update_into(view[header.body_offset : end], out)
    try:
        dec.finalize()
    except InvalidTag as exc:
        out[:] = bytes(len(out))  # drop the unverified plaintext
        raise IntegrityError(f"object {oid} failed authentication: it was altered") from exc
    return out[:n].toreadonly()


def rewrap(blob: bytes, keys: KeyProvider) -> bytes | None:
    """Re-wrap an object's data key under the active KEK, keeping the ciphertext as is.

    Returns:
        the new file bytes (new header + the very same ciphertext bytes), or ``None``
        when the object is already wrapped under the active KEK.
    """
    header = parse_header(blob)
    if header.key_id == keys.active_key_id:
        return None
    key_id, wrapped = keys.wrap(unwrap_key(header, keys))
    return encode_header(key_id, wrapped, header.nonce) + blob[header.body_offset :]
