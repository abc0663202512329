"""The attribute table of DICOM PS3.15 Annex E (Table E.1-1) and how options change it.

The table lives in ``annex_e.tsv`` beside this module: one row per attribute with its
Basic Profile action and its entries in the columns of the three header options echoscreen
uses. :func:`load_table` reads it; :func:`effective_action` combines a row with a
:class:`DeidPolicy`. Attributes the standard names by pattern rather than by tag (private
groups, curve groups 50xx, overlay groups 60xx) are handled in :mod:`echoscreen.deid.profile`.

Action codes (PS3.15 E.1.1): ``D`` dummy value, ``Z`` zero-length (or dummy), ``X``
remove, ``K`` keep, ``C`` clean, ``U`` replace UID consistently; combined codes such as
``X/Z`` mean "X unless the IOD needs Z".
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from echoscreen.deid.policy import DeidPolicy

#: the edition of PS3.15 the Basic Profile column follows
EDITION = "2026c"

#: every action code the table may use in its ``basic`` column
BASIC_ACTIONS = frozenset({"D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"})


@dataclass(frozen=True)
class Rule:
    """One row of Table E.1-1.

    Attributes:
        tag: the attribute tag as an int (``0x00100010`` for Patient's Name).
        keyword: pydicom keyword, or ``""`` for attributes newer than pydicom's dictionary.
        basic: Basic Profile action (one of :data:`BASIC_ACTIONS`).
        pat_chars: Retain Patient Characteristics option entry (``K``, ``C`` or ``""``).
        mod_dates: Retain Longitudinal Temporal Information with Modified Dates entry.
        clean_desc: Clean Descriptors option entry.
        name: the attribute's name as the standard writes it.
    """

    tag: int
    keyword: str
    basic: str
    pat_chars: str
    mod_dates: str
    clean_desc: str
    name: str


def _cell(value: str) -> str:
    return "" if value == "-" else value


def load_table() -> dict[int, Rule]:
    """The packaged Annex E table, as a new dict the caller may change.

    Returns:
        Rules keyed by tag (int).
    """
    return dict(annex_e_table())


@functools.lru_cache(maxsize=1)
def annex_e_table() -> Mapping[int, Rule]:
    """The packaged Annex E table, parsed once per process (it is immutable package data).

    Returns:
        A read-only mapping of rules keyed by tag (int).
    """
    text = resources.files("echoscreen.deid").joinpath("annex_e.tsv").read_text("utf-8")
    rules: dict[int, Rule] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("tag\t"):
            continue
        tag, keyword, basic, pat, mod, desc, name = line.split("\t")
        rules[int(tag, 16)] = Rule(
            tag=int(tag, 16),
            keyword=_cell(keyword),
            basic=basic,
            pat_chars=_cell(pat),
            mod_dates=_cell(mod),
            clean_desc=_cell(desc),
            name=name,
        )
    return MappingProxyType(rules)


def effective_action(rule: Rule, policy: DeidPolicy) -> str:
    """The action to apply to an attribute under ``policy``.

    An option's entry, where it has one, replaces the Basic Profile action: Retain Patient
    Characteristics first, then Modified Dates, then Clean Descriptors (no attribute has
    conflicting entries). Combined codes are then resolved for the Ultrasound IODs, which
    require none of the ``X/...`` attributes: ``X/Z``, ``X/D`` and ``X/Z/D`` become ``X``,
    ``Z/D`` becomes ``Z``; ``X/Z/U*`` stays (a sequence kept with its UIDs replaced).

    Args:
        rule: the attribute's row.
        policy: the profile options in use.

    Returns:
        One of ``D``, ``Z``, ``X``, ``K``, ``C``, ``U``, ``X/Z/U*``.
    """
    action = rule.basic
    if policy.retain_patient_characteristics and rule.pat_chars:
        action = rule.pat_chars
    elif policy.modified_dates and rule.mod_dates:
        action = rule.mod_dates
    elif policy.clean_descriptors and rule.clean_desc:
        action = rule.clean_desc
    if action in {"X/Z", "X/D", "X/Z/D"}:
        return "X"
    if action == "Z/D":
        return "Z"
    return action
