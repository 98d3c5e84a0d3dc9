"""Names that become folders: subject ids, sequence names. One rule each, so a name can
never climb out of its folder (`../x`) and one subject has one name."""

from __future__ import annotations

import re

_SUBJECT_RE = re.compile(r"[A-Za-z0-9_-]+")


def plain_name(value: str, *, pattern: re.Pattern[str], what: str, allowed: str) -> str:
    """`value` unchanged if it matches `pattern`; else a ValueError naming `what`."""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"bad {what} {value!r}: use only letters, digits and {allowed}")
    return value


def validate_subject_id(subject: str) -> str:
    """The subject's one name: plain (letters, digits, '_', '-'), and a numeric id zero-padded
    to three digits as NeRSemble stores it, so `43` and `043` name the same subject."""
    subject = plain_name(subject, pattern=_SUBJECT_RE, what="subject id", allowed="'_-'")
    return f"{int(subject):03d}" if subject.isdigit() else subject
