"""What the benchmarks share: reST tables of their figures.

Imported by the bench_*.py scripts (run as scripts, so this folder is on
sys.path)."""
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
