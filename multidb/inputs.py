"""The rules for what callers give multidb: labels, durations, times,
expiries and dotted names.

One rule each, whoever gives the value: a Python caller, a configuration
key or the ``multidb`` command (which only splits its text, ``key=value``,
and hands the parts here).  A bad value raises
:class:`multidb.errors.InvalidInput` (a ``ValueError``) naming it; a
value of the wrong type, ``TypeError``.

The lowest floor: the standard library and ``multidb.errors`` only.
"""
import collections.abc
import datetime
import pkgutil
import re

from multidb.errors import InvalidInput

# -- labels -------------------------------------------------------------------

#: A label's key: 1 to 63 ASCII letters, digits or ``_.:/-``, starting
#: with a letter or digit.
LABEL_KEY = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}\Z')


def _label_shown(key, value):
    if isinstance(key, str) and isinstance(value, str):
        return f"{key}={value}" if value else key
    return (key, value)


def check_label(key, value=''):
    """``(key, value)`` if they make a good label, else ``InvalidInput``
    naming the label.  The key: 1 to 63 ASCII letters, digits or
    ``_.:/-``, starting with a letter or digit; the value: any text
    without a control (unprintable) character, which would reach
    terminals and logs as it is; empty for a bare key."""
    if not isinstance(key, str) or not isinstance(value, str):
        raise InvalidInput('label', _label_shown(key, value),
                           "a label's key and value are strings")
    if not LABEL_KEY.match(key):
        raise InvalidInput('label', _label_shown(key, value),
                           "the key is 1 to 63 ASCII letters, digits or"
                           " '_.:/-', starting with a letter or digit")
    if not value.isprintable():
        raise InvalidInput('label', _label_shown(key, value),
                           "the value has a control character")
    return key, value


def check_labels(labels) -> dict:
    """The labels as a new dict, each checked (``check_label``): from a
    mapping of key -> value, an iterable of keys (bare labels, empty
    values), or None (no labels)."""
    if labels is None:
        return {}
    if isinstance(labels, collections.abc.Mapping):
        items = labels.items()
    elif isinstance(labels, (str, bytes)) or not isinstance(
            labels, collections.abc.Iterable):
        raise TypeError(f"labels must be a dict or an iterable of keys, not"
                        f" {labels!r:.80}")
    else:
        items = [(key, '') for key in labels]
    return dict(check_label(key, value) for key, value in items)


def parse_label(text: str) -> tuple:
    """A label as text, ``key=value`` or a bare ``key`` (an empty
    value): ``(key, value)``, checked by ``check_label``."""
    key, _, value = text.partition('=')
    return check_label(key, value)


# -- durations ----------------------------------------------------------------

_DURATION = re.compile(r'\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?\s*\Z',
                       re.IGNORECASE)
_UNIT_SECONDS = {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600, 'd': 86400, '': 1}
#: The longest duration: what a ``datetime.timedelta`` holds.
MAX_SECONDS = datetime.timedelta.max.total_seconds()


def parse_duration(text: str, *, zero=False, unit=False) -> float:
    """Seconds, from a duration written as a number of seconds (``90``,
    ``1.5``) or a number and a unit ``ms``, ``s``, ``m``, ``h`` or ``d``
    in any case (``500ms``, ``1.5s``, ``2m``, ``12h``, ``30d``).  It
    must be positive, or may be zero too (``zero``).  With ``unit``, a
    bare number is refused (where it could be read as something else: a
    number of days, a year).  The one spelling of durations: the
    configuration's keys, the command's options and Python text."""
    if not isinstance(text, str):
        raise TypeError(f"a duration must be a str, not {text!r:.80}")
    m = _DURATION.match(text)
    if m is None or (unit and not m.group(2)):
        raise InvalidInput(
            'duration', text,
            "write a number and one of s, m, h, d (30d, 12h, 90m, 3600s)"
            if unit else
            "write a number of seconds, or a number and one of ms, s, m,"
            " h, d (30, 1.5s, 500ms, 2m, 12h, 30d)")
    seconds = float(m.group(1)) * _UNIT_SECONDS[(m.group(2) or '').lower()]
    if not (seconds > 0 or zero and seconds == 0):
        raise InvalidInput('duration', text, "a duration must be positive")
    if seconds > MAX_SECONDS:
        raise InvalidInput('duration', text, "too long")
    return seconds


# -- times --------------------------------------------------------------------

_TIME = re.compile(r"""
    (\d{4})-(\d{2})-(\d{2})                       # date
    (?:[Tt\ ](\d{2})(?::(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?   # time
       (?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?    # time zone
    )?\Z""", re.VERBOSE)
_TIME_FORMS = ("an ISO 8601 date or date and time (2030-01-31,"
               " 2030-01-31T12:00Z)")


def parse_time(text: str) -> datetime.datetime:
    """A time with its time zone, from an ISO 8601 date (midnight) or date
    and time, to the hour, minute, second or fraction, with a time zone
    (``Z``, ``+02:00``, ``+0200``, ``-05``) or none (UTC): ``2030-01-31``,
    ``2030-01-31T12:00Z``, ``2030-01-31 12:00:30.5+02:00``.  The same on
    every Python version (``datetime.fromisoformat`` takes no ``Z``
    before 3.11)."""
    if not isinstance(text, str):
        raise TypeError(f"a time must be a str, not {text!r:.80}")
    m = _TIME.match(text.strip())
    if m is None:
        raise InvalidInput('time', text, f"expected {_TIME_FORMS}")
    (year, month, day, hour, minute, second, fraction, _, sign, off_h,
     off_m) = m.groups()
    try:
        zone = datetime.timezone.utc
        if sign:
            offset = datetime.timedelta(hours=int(off_h),
                                        minutes=int(off_m or 0))
            zone = datetime.timezone(-offset if sign == '-' else offset)
        return datetime.datetime(
            int(year), int(month), int(day), int(hour or 0),
            int(minute or 0), int(second or 0),
            int((fraction or '')[:6].ljust(6, '0')), tzinfo=zone)
    except ValueError as e:
        raise InvalidInput('time', text, f"{e}; expected {_TIME_FORMS}") \
            from None


# -- expiries -----------------------------------------------------------------

def parse_expiry(text: str):
    """An expiry as text: a duration from now with its unit (``30d``,
    ``12h``, ``90m``, ``3600s``: a ``timedelta``) or an ISO 8601 date or
    date and time (``parse_time``: a ``datetime``)."""
    if not isinstance(text, str):
        raise TypeError(f"an expiry must be a str, not {text!r:.80}")
    stripped = text.strip()
    if re.match(r'\d{4}-', stripped):
        return parse_time(text)
    if stripped[:1].isdigit() or stripped[:1] == '.':
        return datetime.timedelta(seconds=parse_duration(text, unit=True))
    raise InvalidInput('expiry', text,
                       f"expected a duration from now (30d, 12h, 90m,"
                       f" 3600s) or {_TIME_FORMS}")


def expiry(value, now: datetime.datetime):
    """When something expires, given ``value`` at ``now``: None (never),
    a datetime (naive: UTC), a timedelta or a number of seconds from now,
    or text (``parse_expiry``)."""
    if isinstance(value, str):
        value = parse_expiry(value)
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value
    try:
        if isinstance(value, datetime.timedelta):
            return now + value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return now + datetime.timedelta(seconds=value)
    except OverflowError:
        raise InvalidInput('expiry', value, "too far from now") from None
    raise TypeError(f"expires must be a datetime, a timedelta, seconds or"
                    f" text (30d, 2030-01-31T12:00Z), not {value!r:.80}")


# -- dotted names -------------------------------------------------------------

# What pkgutil.resolve_name takes: package.module.attr, package.module:attr.
_WORDS = r'(?!\d)\w+(?:\.(?!\d)\w+)*'
_DOTTED = re.compile(rf'{_WORDS}(?::(?:{_WORDS})?)?\Z')


def check_dotted_name(name: str) -> str:
    """``name`` if it is a dotted name (``package.module.attr`` or
    ``package.module:attr``), checked for its syntax only (nothing is
    imported)."""
    if not isinstance(name, str):
        raise TypeError(f"a dotted name must be a str, not {name!r:.80}")
    if not _DOTTED.match(name):
        raise InvalidInput('dotted name', name,
                           "expected package.module.name or"
                           " package.module:name")
    return name


def resolve_dotted(name):
    """The object a dotted name names (``package.module.attr`` or
    ``package.module:attr``, imported by ``pkgutil.resolve_name``); a
    callable is returned as it is.  ``InvalidInput`` naming the dotted
    name when it cannot be imported."""
    if callable(name):
        return name
    check_dotted_name(name)
    try:
        return pkgutil.resolve_name(name)
    except (ImportError, AttributeError, ValueError) as e:
        raise InvalidInput('dotted name', name,
                           f"cannot import it: {e}") from None
