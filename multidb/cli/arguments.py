"""The arguments of the ``multidb`` command: the global options and
the types that check option values while parsing.

A bad value is a usage error (exit 2) before the configuration is
loaded: it touches nothing.
"""
import argparse
import datetime
import re

from multidb.errors import InvalidName


def _define(text: str) -> tuple:
    name, sep, value = text.partition('=')
    if not sep or not name:
        raise argparse.ArgumentTypeError(
            f"expected NAME=VALUE, not {text!r}")
    return name, value


def global_options(suffix: str, default) -> argparse.ArgumentParser:
    """The global options, declared once, as a parent parser
    (``parents=``): for the main parser (``suffix`` '', ``default``
    None), and one for every subcommand (``'_after'``, ``SUPPRESS``)."""
    # Given twice: before the subcommand (the documented place) and after
    # it, where operators also type them; the second set must not reset
    # what the first set.
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(
        '-C', '--config', action='append', metavar='FILE',
        dest='config' + suffix, default=default,
        help="a configuration file, or a folder of *.conf files;"
             " repeatable, composed in order")
    parser.add_argument(
        '-D', '--define', action='append', metavar='NAME=VALUE',
        type=_define, dest='define' + suffix, default=default,
        help="set a %%define of the configuration (wins over the"
             " file's own); repeatable")
    parser.add_argument(
        '--json', action='store_true', default=default,
        help="print machine-readable JSON")
    parser.add_argument(
        '--debug', action='store_true', default=default,
        help="print the traceback of an error")
    parser.add_argument(
        '--progress', action=argparse.BooleanOptionalAction,
        dest='progress' + suffix, default=default,
        help="show a progress bar on stderr for long operations"
             " (default: only when stderr is a terminal)")
    return parser


# -- health: argument types ---------------------------------------------------

def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not value > 0:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of seconds, not {text!r}")
    return value


# -- tenants: argument types --------------------------------------------------
# Option values are checked while parsing, before the configuration is
# loaded: a bad value is a usage error (exit 2) and touches nothing.

_DURATION = re.compile(r'(\d+)([smhd])\Z')
_UNITS = {'s': 'seconds', 'm': 'minutes', 'h': 'hours', 'd': 'days'}
_LABEL_KEY = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.:/-]{0,62}\Z')


def _tenant_name(text: str) -> str:
    from multidb.names import check_tenant_name
    try:
        return check_tenant_name(text)
    except InvalidName as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _timestamp(text: str) -> datetime.datetime:
    """An ISO date or date and time; UTC unless it says otherwise."""
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO date or date and time (2030-01-31,"
            f" 2030-01-31T12:00Z), not {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    return when


def _expires(text: str):
    """``--expires``: a duration from now (``30d``, ``12h``, ``90m``,
    ``3600s``) or an ISO date or date and time."""
    m = _DURATION.match(text.strip())
    if m:
        amount = int(m.group(1))
        if not amount:
            raise argparse.ArgumentTypeError(
                f"a duration must be positive, not {text!r}")
        try:
            return datetime.timedelta(**{_UNITS[m.group(2)]: amount})
        except OverflowError:
            raise argparse.ArgumentTypeError(
                f"duration {text!r} is too long") from None
    if text[:1].isdigit() and not re.match(r'\d{4}-', text):
        raise argparse.ArgumentTypeError(
            f"bad duration {text!r}: write a number and one of s, m, h, d"
            f" (30d, 12h, 90m, 3600s)")
    try:
        return _timestamp(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a duration (30d, 12h, 90m, 3600s) or an ISO date"
            f" or date and time (2030-01-31, 2030-01-31T12:00Z),"
            f" not {text!r}") from None


def _label(text: str) -> tuple:
    """``--label``: ``key=value`` or a bare ``key`` (an empty value)."""
    key, _, value = text.partition('=')
    if not _LABEL_KEY.match(key):
        raise argparse.ArgumentTypeError(
            f"bad label {text!r}: the key is 1 to 63 ASCII letters, digits"
            f" or '_.:/-', starting with a letter or digit")
    if any(not c.isprintable() for c in value):
        raise argparse.ArgumentTypeError(
            f"bad label {text!r}: the value has a control character")
    return key, value


_NAME = dict(type=_tenant_name, metavar='NAME')
_EXPIRES = (('--expires',), dict(
    type=_expires, metavar='WHEN',
    help="when the tenant expires: a duration from now (30d, 12h, 90m,"
         " 3600s) or an ISO date or date and time (UTC unless it says"
         " otherwise)"))
_LABEL = (('--label',), dict(
    type=_label, action='append', metavar='KEY[=VALUE]',
    help="a label of the tenant; repeatable"))
