"""What the ``multidb`` command prints: tables, JSON, times, sizes and
progress bars.
"""
import contextlib
import datetime
import json
import os
import sys
from typing import Optional


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def _widths(rows: list, header: tuple) -> list:
    return [max(len(str(r[i])) for r in [header, *rows])
            for i in range(len(header))]


def _table(rows: list, header: Optional[tuple],
           widths: Optional[list] = None) -> str:
    """rows under header (None: no header line), in columns of widths
    (default: the widest cells)."""
    top = [] if header is None else [header]
    if widths is None:
        widths = _widths(rows, header)
    lines = ['  '.join(str(v).ljust(w) for v, w in zip(row, widths))
             .rstrip() for row in [*top, *rows]]
    return '\n'.join(lines)


def _stream_json(items) -> None:
    """Print a JSON array of items as _print_json would, one item at a
    time."""
    out = sys.stdout
    first = True
    for item in items:
        text = json.dumps(item, indent=2, sort_keys=False)
        out.write(('[\n' if first else ',\n')
                  + '\n'.join('  ' + line for line in text.split('\n')))
        first = False
    out.write('[]\n' if first else '\n]\n')
    out.flush()


@contextlib.contextmanager
def _progress(args, what: str, total=None, unit='B'):
    """A ``progress`` callback drawing a bar on stderr, or None when the
    bar is off (stderr not a terminal, unless ``--progress``)."""
    show = args.progress
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        yield None
        return
    from tqdm import tqdm
    bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr,
               unit_scale=unit == 'B', unit_divisor=1024,
               dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()


def _size_of(rec) -> Optional[int]:
    # For the bar's total only: None (an open-ended bar) when unknown.
    path = rec.settings.get('path')
    try:
        return os.path.getsize(path) if path else None
    except OSError:
        return None


def _time(t) -> str:
    if t is None:
        return '-'
    return t.astimezone(datetime.timezone.utc).strftime('%Y-%m-%dT%H:%M:%SZ')


def _bytes(n) -> str:
    """A size as the progress bar shows it (tqdm's own formatter, powers
    of 1024: ``1.50kB``, ``10.0MB``); '-' when unknown."""
    if n is None:
        return '-'
    from tqdm import tqdm
    return tqdm.format_sizeof(n, 'B', 1024)
