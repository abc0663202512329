"""Keyed pseudonyms and date shifts: HMAC-SHA256 under the site's pseudonymisation secret.

Every derivation is domain-separated (a distinct label goes into the MAC), so a UID
pseudonym, a patient pseudonym and a date shift computed from the same input are unrelated.
Without the secret none of them can be reversed or even recomputed from a guess.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac

from echoscreen.errors import ConfigError

#: the shortest secret accepted (bytes); site secrets are 32 random bytes
MIN_SECRET_BYTES = 16
#: date shifts lie in [-MAX_SHIFT_DAYS, -1]: always into the past, never zero
MAX_SHIFT_DAYS = 1095


def check_secret(secret: bytes) -> bytes:
    """Validate a pseudonymisation secret.

    Args:
        secret: raw key bytes.

    Returns:
        The same bytes.

    Raises:
        ConfigError: when the secret is not bytes or is shorter than 16 bytes.
    """
    if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the pseudonymisation secret must be at least {MIN_SECRET_BYTES} random bytes; "
            "use the site's key material (echoscreen site init creates it)"
        )
    return bytes(secret)


def mac(secret: bytes, label: str, value: str) -> bytes:
    """HMAC-SHA256 of ``label`` and ``value`` (UTF-8, NUL-separated) under ``secret``.

    Args:
        secret: the pseudonymisation secret.
        label: the domain of the derivation (``"uid"``, ``"id:patient"``, ``"date"``).
        value: the original value.

    Returns:
        32 bytes.
    """
    msg = label.encode("utf-8") + b"\x00" + value.encode("utf-8")
    return hmac.new(secret, msg, hashlib.sha256).digest()


def uid_pseudonym(secret: bytes, uid: str) -> str:
    """A ``2.25.<int>`` UID (PS3.5 B.2) from the first 128 bits of the MAC of ``uid``.

    Args:
        secret: the pseudonymisation secret.
        uid: the original UID (surrounding spaces and NULs are ignored).

    Returns:
        At most 44 characters, a valid UID.
    """
    digest = mac(secret, "uid", uid.strip(" \x00"))
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def id_pseudonym(secret: bytes, value: str, kind: str) -> str:
    """A short keyed identifier: the kind's first letter and 16 base32 characters (80 bits).

    Args:
        secret: the pseudonymisation secret.
        value: the original identifier.
        kind: what the identifier names (``"patient"``, ``"study"``, ...).

    Returns:
        e.g. ``"P7QK2M4XHZ5A3RTBN"`` for a patient; fits SH and LO.
    """
    digest = mac(secret, f"id:{kind}", value.strip())
    body = base64.b32encode(digest[:10]).decode("ascii")
    return (kind[:1].upper() or "X") + body


def shift_days(secret: bytes, patient_key: str) -> int:
    """The patient's date shift in days, in ``[-MAX_SHIFT_DAYS, -1]``.

    Args:
        secret: the pseudonymisation secret.
        patient_key: the original Patient ID (or the stand-in used when it is missing).

    Returns:
        A negative number of days, the same for every call with the same inputs.
    """
    digest = mac(secret, "date", patient_key.strip())
    return -(int.from_bytes(digest[:8], "big") % MAX_SHIFT_DAYS) - 1


def _shift_date8(text: str, days: int) -> str | None:
    try:
        day = dt.date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        return None
    try:
        return (day + dt.timedelta(days=days)).strftime("%Y%m%d")
    except OverflowError:
        return None


def shift_da(value: str, days: int) -> str | None:
    """Shift a DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` form is accepted).

    Args:
        value: the DA text.
        days: days to add.

    Returns:
        The shifted ``YYYYMMDD``, or None when the value is not a date (it is then emptied).
    """
    text = value.strip().replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    return _shift_date8(text, days)


def shift_dt(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping time of day, fraction and UTC offset.

    Partial values (``YYYY``, ``YYYYMM``) are shifted from their first day and truncated
    back to the same precision.

    Args:
        value: the DT text, ``YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]``.
        days: days to add.

    Returns:
        The shifted DT, or None when the value is not a date-time (it is then emptied).
    """
    text = value.strip()
    head = text[:8]
    digits = len(head) if head.isdigit() else next(i for i, c in enumerate(head) if not c.isdigit())
    if digits in (4, 6):
        padded = head[:digits] + "0101"[digits - 4 :]
        shifted = _shift_date8(padded, days)
        return None if shifted is None else shifted[:digits] + text[digits:]
    if digits != 8:
        return None
    shifted = _shift_date8(head, days)
    return None if shifted is None else shifted + text[8:]
