"""Fault injection for the crash and race tests of the tenant lifecycle.

``MULTIDB_CRASH_AT=step`` kills the process at a step (as a power cut
would), ``MULTIDB_PAUSE_AT=step`` stops it there until a line comes on
stdin; unset (as always outside the tests), every crash point does
nothing.
"""
import os


def _crashpoint(step):
    # Fault injection for the kill -9 tests: MULTIDB_CRASH_AT=step makes
    # the process kill itself there, as a power cut would.
    if os.environ.get('MULTIDB_CRASH_AT') == step:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    # And for the race tests: MULTIDB_PAUSE_AT=step stops there (as a slow
    # disk would) until a line comes on stdin.
    if os.environ.get('MULTIDB_PAUSE_AT') == step:
        import sys
        print(f'PAUSED {step}', flush=True)
        sys.stdin.readline()


class _CrashBeforeCatalogFinish:
    """A data manager for the kill -9 tests: joined to a transaction that
    writes the catalog, it kills the process after the tenants' storages
    finished their commit and before the catalog does (its sort key falls
    between theirs and the catalog's, see Tenants.__init__)."""

    transaction_manager = None

    def sortKey(self):
        return '\x7f'

    def tpc_finish(self, txn):
        _crashpoint('catalog.tpc_finish')

    def abort(self, txn):
        pass

    tpc_begin = commit = tpc_vote = tpc_abort = abort


def _crash_test_join(tm):
    if os.environ.get('MULTIDB_CRASH_AT') == 'catalog.tpc_finish':
        tm.get().join(_CrashBeforeCatalogFinish())
