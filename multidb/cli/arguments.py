"""The arguments of the ``multidb`` command: the global options and
the types that check option values while parsing.

A bad value is a usage error (exit 2) before the configuration is
loaded: it touches nothing.
"""
import argparse

from multidb.errors import InvalidInput
from multidb.errors import InvalidName
from multidb.inputs import parse_duration
from multidb.inputs import parse_expiry
from multidb.inputs import parse_label
from multidb.inputs import parse_time
from multidb.names import check_tenant_name


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


# -- argument types -----------------------------------------------------------
# Option values are checked while parsing, before the configuration is
# loaded: a bad value is a usage error (exit 2) and touches nothing.  The
# rules are the library's (multidb.inputs, multidb.names): the command
# accepts and refuses what Python callers may give.

def _checked(parse):
    """An argument type: parse(text), its InvalidInput or InvalidName a
    usage error."""
    def argument_type(text: str):
        try:
            return parse(text)
        except (InvalidInput, InvalidName) as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    argument_type.__name__ = parse.__name__
    return argument_type


#: ``--timeout``: a positive duration, seconds by default (``6``, ``3s``,
#: ``500ms``).
_seconds = _checked(parse_duration)
_tenant_name = _checked(check_tenant_name)
#: An ISO 8601 date or date and time; UTC unless it says otherwise.
_timestamp = _checked(parse_time)
#: ``--expires``: a duration from now (``30d``, ``12h``, ``90m``,
#: ``3600s``) or an ISO 8601 date or date and time.
_expires = _checked(parse_expiry)
#: ``--label``: ``key=value`` or a bare ``key`` (an empty value).
_label = _checked(parse_label)


_NAME = dict(type=_tenant_name, metavar='NAME')
_EXPIRES = (('--expires',), dict(
    type=_expires, metavar='WHEN',
    help="when the tenant expires: a duration from now (30d, 12h, 90m,"
         " 3600s) or an ISO 8601 date or date and time (2030-01-31,"
         " 2030-01-31T12:00Z; UTC unless it says otherwise)"))
_LABEL = (('--label',), dict(
    type=_label, action='append', metavar='KEY[=VALUE]',
    help="a label of the tenant; repeatable"))
