"""What the benchmarks share: reST tables of their figures, and figures
over several runs ("median (min-max)").

Imported by the bench_*.py scripts (run as scripts, so this folder is on
sys.path)."""
import os
import statistics
import sys


def table(title, header, rows):
    """Print a reST simple table under a title."""
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    rule = '  '.join('=' * w for w in widths)
    print()
    print(title)
    print('-' * len(title))
    print()
    print(rule)
    print('  '.join(c.ljust(w) for c, w in zip(header, widths)).rstrip())
    print(rule)
    for row in cells[1:]:
        print('  '.join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    print(rule)
    sys.stdout.flush()


def verdict(ok):
    return 'met' if ok else 'MISSED'


# -- figures over several runs ---------------------------------------------

def add_runs_argument(parser, default=3):
    """The --runs N option shared by the scripts."""
    parser.add_argument(
        '--runs', type=int, default=default,
        help=f'repeat the measurements this many times in the run; every'
             f' figure is printed as "median (min-max)" over the runs'
             f' (default: {default})')


def fig(values, digits=3, fmt=None):
    """A figure over runs: "median (min-max)"; the value alone for one
    run.  fmt, if given, formats one value (a format spec such as
    ',.0f'); else digits after the point."""
    values = list(values)
    if not values:
        return 'n/a'
    spec = fmt or f'.{digits}f'

    def f(x):
        return format(x, spec)
    if len(values) == 1:
        return f(values[0])
    return (f"{f(statistics.median(values))} ({f(min(values))}-"
            f"{f(max(values))})")


class Runs:
    """Figures of several runs: key -> the list of per-run values."""

    def __init__(self):
        self.data = {}

    def add(self, key, value):
        self.data.setdefault(key, []).append(float(value))

    def get(self, key):
        return self.data.get(key, [])

    def med(self, key):
        v = self.get(key)
        return statistics.median(v) if v else float('nan')

    def fig(self, key, digits=3, fmt=None):
        return fig(self.get(key), digits, fmt)

    def __contains__(self, key):
        return key in self.data


def filestorage_bytes(folder, key):
    """(data, index): the bytes of a FileStorage file made by ZODB in
    folder, whose root holds {key: 0}, and of its index; copies of them
    are databases (a FileStorage file holds no trace of its path)."""
    import os

    import ZODB
    from ZODB.FileStorage import FileStorage
    template = os.path.join(folder, 'template.fs')

    def clear():
        for ext in ('', '.index', '.lock', '.tmp'):
            if os.path.exists(template + ext):
                os.remove(template + ext)
    clear()
    db = ZODB.DB(FileStorage(template))
    with db.transaction() as conn:
        conn.root()[key] = 0
    db.close()
    with open(template, 'rb') as f:
        data = f.read()
    with open(template + '.index', 'rb') as f:
        index = f.read()
    clear()
    return data, index


def machine():
    """The CPU, cores and memory of this machine, one line."""
    cpu = '?'
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    with open('/proc/meminfo') as f:
        mem = int(f.readline().split()[1]) // 1024
    return f'{cpu}, {os.cpu_count()} cores, {mem} MB'
