"""add/declare/remove/group hammered by a few threads at once."""
import random
import threading

import pytest
import transaction
from ZODB.POSException import ConflictError

import multidb


@pytest.mark.slow
def test_hammer(fs_factory):
    c = multidb.Collection(max_open=4, open_timeout=30)
    names = [f'd{i}' for i in range(8)]
    for n in names[:4]:
        c.declare(n, fs_factory(n))
    errors = []
    commits = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def worker(seed):
        rnd = random.Random(seed)
        tm = transaction.TransactionManager()
        while not stop.is_set():
            n = rnd.choice(names)
            op = rnd.random()
            try:
                if op < 0.15:
                    c.declare(n, fs_factory(n))
                elif op < 0.25:
                    c.remove(n, timeout=0.5)
                elif op < 0.30:
                    c.add(n, fs_factory(n))
                else:
                    with c.transaction(tm) as g:
                        root = g.root(n)
                        root['n'] = root.get('n', 0) + 1
                        other = rnd.choice(names)
                        if other != n:
                            g.root(other)
                    with lock:
                        commits[0] += 1
            except (multidb.DuplicateName, multidb.UnknownDatabase,
                    multidb.DatabaseInUse, ConflictError,
                    # A group holding a database finds the other three in
                    # use by groups doing the same (max_open is 4).
                    multidb.TooManyOpen):
                pass
            except Exception as e:  # anything else is a bug
                errors.append(e)
                stop.set()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    stop.wait(4)
    stop.set()
    [t.join() for t in threads]
    assert errors == []
    assert commits[0] > 50
    # max_open is a hard bound.
    assert c.settle(10)
    assert c.open_count <= 4
    # Every remaining database still opens and works.
    for n in list(c):
        with c.transaction() as g:
            g.root(n)['ok'] = True
    c.close()
