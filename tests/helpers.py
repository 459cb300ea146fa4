"""Small helpers shared by the tests."""


def _coll(where):
    # A Collection, or Tenants (whose collection is meant).
    return getattr(where, 'collection', where)


def root_dict(where, name):
    """The root of database name as a dict, read in a transaction."""
    with _coll(where).transaction() as g:
        return dict(g.root(name))


def update_root(where, name, **values):
    """Set values in the root of database name, in a transaction."""
    with _coll(where).transaction() as g:
        g.root(name).update(values)


# A FileStorage catalog and FileStorage tenants under ./data (the tests
# run in their own folder); keys: more keys of the <tenants> section.
_TENANTS_CONFIG = """
%define data ./data
<multidb>
  <zodb catalog>
    <filestorage>
      path $data/catalog.fs
    </filestorage>
  </zodb>
  <tenants>
    KEYS
    <filestorage>
      path $data/tenants/{name}.fs
    </filestorage>
  </tenants>
</multidb>
"""


def tenants_config(keys=''):
    """The text of a configuration with FileStorage tenants."""
    return _TENANTS_CONFIG.replace('KEYS', keys)



def repair_while_paused(worker, step, repair_argv, env, paused=None):
    """worker (a process started with MULTIDB_PAUSE_AT=step, stdin and
    stdout pipes) pauses at step; run repair_argv (a repair printing its
    findings as JSON) meanwhile, then let the worker go on.  Both must
    succeed; returns the repair's findings.  A repair that waits for the
    operation's name lock ends after the worker.  paused(): checks made
    while the worker is paused, before the repair starts."""
    import json
    import subprocess
    import time
    repair = None
    try:
        line = worker.stdout.readline()
        assert line == f'PAUSED {step}\n', worker.stderr.read()
        if paused is not None:
            paused()
        repair = subprocess.Popen(repair_argv, env=env,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        time.sleep(2)   # long enough for a repair that takes no lock
        worker.stdin.write('\n')
        worker.stdin.flush()
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        out, err = repair.communicate(timeout=60)
        assert repair.returncode == 0, err
    finally:
        for proc in (worker, repair):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    return json.loads(out)
