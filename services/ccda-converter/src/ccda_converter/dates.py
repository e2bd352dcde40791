"""FHIR date/dateTime/instant strings to HL7 v3 TS values, keeping the source precision.

HL7 C-CDA on FHIR mappingGuidance: "2023" -> "2023", "2023-05-31" -> "20230531",
"2023-05-31T22:05-05:00" -> "202305312205-0500". GP Connect dateTimes without a timezone keep no
offset rather than an invented one.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

_FHIR_DATE = re.compile(
    r"^\s*(\d{4})(?:-(\d{2})(?:-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2})?)?)?)?\s*$"
)


def to_ts(value: object) -> str | None:
    """HL7 TS for a FHIR date/dateTime/instant string, or None when it is not one."""
    if not isinstance(value, str):
        return None
    return ts_of(value)


@functools.lru_cache(maxsize=32768)
def ts_of(value: str) -> str | None:
    """``to_ts`` for a string (memoised: records repeat the same dates)."""
    m = _FHIR_DATE.match(value)
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, tz = m.groups()
    if not _real(year, month, day, hour, minute, second, tz):
        return None
    out = year
    if month:
        out += month
        if day:
            out += day
            if hour:
                out += hour + minute
                if second:
                    out += second
                    if frac:
                        out += frac
                if tz:
                    out += "+0000" if tz == "Z" else tz.replace(":", "")
    return out


def _real(
    year: str,
    month: str | None,
    day: str | None,
    hour: str | None,
    minute: str | None,
    second: str | None,
    tz: str | None,
) -> bool:
    """Whether the matched parts name a real moment, at every precision the value gives.

    The regex checks only the shape: "1987-02-29" or "2023-04-31" would become a TS that is no
    valid HL7 date and breaks readers of the CCD (e.g. the XDS serviceStartTime that soap-edge
    derives from the serviceEvent low). datetime does the calendar check; a unit the value does
    not give defaults to its first value, so "2023-05" is checked as a year and a month.
    """
    try:
        dt.date(int(year), int(month or 1), int(day or 1))
        if hour is not None and minute is not None:
            # FHIR R4/STU3 dateTime allows second 60 (leap seconds); datetime.time does not.
            seconds = int(second or 0)
            dt.time(int(hour), int(minute), 59 if seconds == 60 else seconds)
    except ValueError:
        return False
    if tz is None or tz == "Z":
        return True
    # FHIR dateTime offsets run from -13:59 to +14:00 (the regex of the FHIR dateTime type).
    hours, minutes = int(tz[1:3]), int(tz[-2:])
    return minutes < 60 and (hours < 14 or (hours == 14 and minutes == 0))


def sort_key(ts: str) -> str:
    """A string that orders TS values chronologically (ignoring offsets), padded to seconds."""
    digits = ts[:14]
    return digits + "0" * (14 - len(digits))


def now_ts(moment: dt.datetime) -> str:
    """US Realm DTM for the document header: seconds and an explicit offset (CONF:1198-5256)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.strftime("%Y%m%d%H%M%S%z")


def display_date(value: object) -> str:
    """A human date for narrative tables: the source value trimmed to minutes, 'T' as space."""
    if value.__class__ is not str:
        return _display_date(value) if isinstance(value, str) else ""
    return _display_date(value)


@functools.lru_cache(maxsize=32768)
def _display_date(value: str) -> str:
    """``display_date`` for a string (memoised: records repeat the same dates)."""
    if not value.strip():
        return ""
    text = value.strip()
    if "T" in text:
        date_part, _, time_part = text.partition("T")
        hhmm = time_part[:5]
        if hhmm in ("00:00",):
            return date_part
        return f"{date_part} {hhmm}"
    return text
