"""Where configuration sections are, and the errors that say so.

:class:`Source` is the place a section starts (file, line, storage kind),
as the loader of :mod:`multidb.config` records it while it parses; the
errors of the checks that span sections name those places.
"""
import functools
import urllib.request
from typing import NamedTuple
from typing import Optional

import ZConfig
from ZConfig.matcher import SectionValue


class Source(NamedTuple):
    """Where a section starts: its file (``<string>`` for text), line and
    the kind of storage it declares."""

    file: str
    line: int
    kind: str = ''
    url: Optional[str] = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@functools.lru_cache(maxsize=256)
def _display(url: Optional[str]) -> str:
    if not url:
        return '<string>'
    if url.startswith('file://'):
        return urllib.request.url2pathname(url[7:])
    return url


def _source(section: SectionValue, kind: str = '') -> Source:
    # Sections parsed by another loader (an application's own schema
    # importing multidb) have no recorded position.
    url, line = getattr(section.getSectionMatcher(), 'multidb_where',
                        (None, 0))[:2]
    return Source(_display(url), line, kind, url)


def _error(message: str, section: SectionValue) -> ZConfig.ConfigurationError:
    url, line = getattr(section.getSectionMatcher(), 'multidb_where',
                        (None, None))[:2]
    return ZConfig.ConfigurationSyntaxError(message, url, line)
