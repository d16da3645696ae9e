"""systemd OnCalendar= expressions: validated with `systemd-analyze calendar` where it exists, with a
faithful pure-Python check of the same grammar otherwise.

The grammar is systemd's (man systemd.time, "Calendar Events"; parser: systemd src/shared/calendarspec.c,
calendar_spec_from_string, v252 as shipped by Debian 12 and close to Ubuntu 24.04's v255):

    [weekdays] [[year-]month-day] [hour:minute[:second]] [timezone]   or   a shorthand   or   @epoch

tests/test_real_validators.py compares the fallback with systemd-analyze on a table of accepted and
refused expressions, so a drift between the two shows up in `make check`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zoneinfo
from functools import lru_cache

# calendarspec.c: specials matched case-insensitively (strcaseeq).
SHORTHANDS = (
    "minutely",
    "hourly",
    "daily",
    "monthly",
    "weekly",
    "yearly",
    "annually",
    "quarterly",
    "semiannually",
)
# calendarspec.c day_nr[]: Monday is 0, so a range is ascending from Monday to Sunday.
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_NAMES = {
    **{name: index for index, name in enumerate(_WEEKDAYS)},
    **{
        name: index
        for index, name in enumerate(
            ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
        )
    },
}
_NUMBER = re.compile(r"^[0-9]+$")
_SECONDS = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")


class CalendarError(ValueError):
    pass


def _weekdays(token: str) -> bool:
    """True when `token` is a weekday list ("Mon..Fri,Sun", "mon-wed"); raises when it looks like one but
    is malformed."""
    # calendarspec.c parse_weekdays tolerates one trailing comma ("Mon,").
    items = token.removesuffix(",").split(",")
    if not all(re.fullmatch(r"[A-Za-z]+(?:(?:\.\.|-)[A-Za-z]+)?", item) for item in items):
        return False
    for item in items:
        parts = re.split(r"\.\.|-", item.lower())
        days = [_WEEKDAY_NAMES.get(part) for part in parts]
        if any(day is None for day in days):
            raise CalendarError(f"'{item}' is not a weekday (Mon … Sun)")
        if len(days) == 2 and days[0] > days[1]:  # type: ignore[operator]
            raise CalendarError(f"weekday range '{item}' must go forwards (Mon..Sun)")
    return True


def _component(text: str, low: int, high: int, what: str, *, fraction: bool = False) -> None:
    """One field: comma-separated items of '*', N, N..M, each optionally with a '/repeat'."""
    number = _SECONDS if fraction else _NUMBER
    if text == "*":
        return
    for item in text.split(","):
        base, slash, repeat = item.partition("/")
        if slash and not (number.match(repeat) and float(repeat) > 0):
            raise CalendarError(f"'{item}': the repetition after '/' must be a positive number")
        start, dots, end = base.partition("..")
        bounds = [start, end] if dots else [start]
        if not all(number.match(bound) for bound in bounds):
            raise CalendarError(f"'{item}' is not a number, a range 'a..b' or '*' in the {what}")
        values = [float(bound) for bound in bounds]
        # Seconds carry a fraction, kept to microseconds (59.999999 is fine, 59.9999999 rounds to 60).
        values = [round(value, 6) for value in values]
        if not all(low <= value < high + 1 if fraction else low <= value <= high for value in values):
            raise CalendarError(f"'{item}' is out of range for the {what} ({low}-{high})")
        if len(values) == 2 and values[0] > values[1]:
            raise CalendarError(f"range '{item}' in the {what} must go forwards")


def _year(text: str) -> None:
    # calendarspec.c parse_year: two-digit years are widened to 19xx (>= 70) or 20xx; others 1970-2199.
    widened = []
    for item in text.split(","):
        base, slash, repeat = item.partition("/")
        bounds = base.split("..")
        for index, bound in enumerate(bounds):
            if _NUMBER.match(bound) and len(bound) <= 2:
                bounds[index] = str(int(bound) + (1900 if int(bound) >= 70 else 2000))
        widened.append("..".join(bounds) + slash + repeat)
    _component(",".join(widened), 1970, 2199, "year")


def _date(token: str) -> None:
    # [year-]month-day or [year-]month~day (~: days counted from the end of the month)
    match = re.fullmatch(r"(?:([^-~]+)-)?([^-~]+)([-~])([^-~]+)", token)
    if not match:
        raise CalendarError(f"'{token}' is not a date such as '*-*-*', '2026-01-01' or '*-*~01'")
    year, month, _, day = match.groups()
    if year is not None:
        _year(year)
    _component(month, 1, 12, "month")
    _component(day, 1, 31, "day")


def _time(token: str) -> None:
    parts = token.split(":")
    if len(parts) not in (2, 3):
        raise CalendarError(f"'{token}' is not a time such as '03:15' or '03:15:00'")
    _component(parts[0], 0, 23, "hour")
    _component(parts[1], 0, 59, "minute")
    if len(parts) == 3:
        _component(parts[2], 0, 59, "second", fraction=True)


@lru_cache(maxsize=1)
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_fallback(expression: str) -> None:
    """Raise CalendarError unless `expression` is an OnCalendar expression systemd accepts."""
    if expression != expression.strip() or not expression:
        raise CalendarError("must not be empty or start or end with whitespace")
    tokens = expression.split()
    # A trailing "UTC" or IANA time zone name (calendarspec.c: strcaseeq "UTC", timezone_is_valid).
    if len(tokens) > 1 and (tokens[-1].lower() == "utc" or tokens[-1] in _timezones()):
        tokens = tokens[:-1]
    if len(tokens) == 1 and tokens[0].startswith("@"):
        if not _NUMBER.match(tokens[0][1:]):
            raise CalendarError(f"'{tokens[0]}' is not '@' followed by seconds since the epoch")
        return
    if len(tokens) == 1 and tokens[0].lower() in SHORTHANDS:
        return
    position = 0
    if position < len(tokens) and _weekdays(tokens[position]):
        position += 1
    if position < len(tokens) and ":" not in tokens[position]:
        _date(tokens[position])
        position += 1
    if position < len(tokens):
        _time(tokens[position])
        position += 1
    if position != len(tokens) or position == 0:
        raise CalendarError("expected [weekdays] [[year-]month-day] [hour:minute[:second]] [timezone]")


def systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze")


def check_with_systemd(expression: str, tool: str) -> None:
    """Ask systemd itself. Its message names what it could not parse."""
    result = subprocess.run(
        [tool, "calendar", "--", expression],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "SYSTEMD_LOG_COLOR": "0"},
    )
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["refused"])[-1]
        raise CalendarError(f"systemd-analyze calendar refuses it: {detail}")


def check_calendar(expression: str) -> None:
    tool = systemd_analyze()
    if tool is None:
        check_fallback(expression)
    else:
        check_with_systemd(expression, tool)
