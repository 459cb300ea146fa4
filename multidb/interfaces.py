"""The contracts of multidb.

Implementations live in private modules; their docstrings point back here.
"""
from zope.interface import Attribute
from zope.interface import Interface


class ICollection(Interface):
    """A collection of named ZODB databases sharing one ``databases``
    mapping.

    Names are declared (a storage factory, opened on first use) or added
    (opened now).  Every database of the collection gets the same
    ``databases`` mapping, so plain ZODB code (``db.databases``,
    ``Connection.get_connection``, cross-database references) works
    unchanged, and opens declared databases as a side effect.

    The collection reads like a mapping of name to ``ZODB.DB``:
    ``name in c``, ``len(c)``, ``iter(c)`` cover declared and open names;
    ``c[name]`` opens a declared database.
    """

    databases = Attribute(
        "The mapping handed as ``databases=`` to every ZODB.DB of the "
        "collection.  Reading a declared name opens that database.")

    max_open = Attribute(
        "The most databases open at once, a hard bound (databases being "
        "opened or closed count); the least recently used idle one is "
        "closed to make room.  Databases holding no files (in-memory "
        "storages) do not count.")

    commit_last = Attribute(
        "A set of database names whose connections finish last in a "
        "two-phase commit (after every other member of the transaction): "
        "a catalog whose records must never describe uncommitted data "
        "goes here.  Changed by the application; read at each commit.")

    reference_checks = Attribute(
        "A list of callables ``check(source, target, obj)``, called when a"
        " commit stores a reference from object ``obj`` of database"
        " ``source`` into database ``target`` (strong or weak); one that"
        " raises refuses the commit.  The tenants layer appends its"
        " isolation check here.  Changed by the application; read at each"
        " such reference.")

    commit_hooks = Attribute(
        "A list of callables ``hook(name, tid)`` called after each commit"
        " to a database of the collection made in this process, with the"
        " transaction's id (in the committing thread, once the commit is"
        " done: a hook must be quick and must not use the transaction)."
        "  The tenants layer tells its commit subscribers through it.")

    closing_hooks = Attribute(
        "A list of callables called without arguments when ``close()``"
        " begins: the collection already refuses new groups, and its"
        " databases are still open.  A layer above lets its own work in"
        " progress end there (the tenants layer waits, at most"
        " ``catch_up_wait``, for a catch-up with the catalog that is"
        " reading it).  Groups of the application are not waited for, as"
        " ZODB's ``DB.close()`` does not wait for its connections."
        "  Changed by the application.")

    close_hooks = Attribute(
        "A list of callables called without arguments once ``close()`` has"
        " closed the databases (the tenants layer stops its watcher and"
        " listener there).  Changed by the application.")

    resolver = Attribute(
        "The ``INameResolver`` consulted for names the collection does "
        "not know, or None.  Set with ``set_resolver``.")

    tenants = Attribute(
        "The tenant lifecycle (an ``ITenants``) when the collection's "
        "resolver is one: set up by a ``<tenants>`` configuration section "
        "or by ``multidb.Tenants(collection, ...)``.  Reading it raises "
        "``NotConfigured`` on a collection without tenants.")

    closed = Attribute(
        "True once close() was called: the collection opens nothing"
        " more.")

    open_count = Attribute(
        "How many databases count against ``max_open`` right now: open, "
        "being opened or being closed, except those holding no files (in "
        "memory).  Read-only.")

    configuration = Attribute(
        "What the collection was loaded from, or None for a collection "
        "built in code (the default).  Set by ``multidb.config`` loading, "
        "never read by the collection: a ``multidb.config.Configuration`` "
        "with ``files`` (the configuration files read, in composition "
        "order; empty for a string), ``sources`` (database name -> "
        "``multidb.config.Source``: file, line and storage kind), "
        "``tenant_template`` (the ``<tenants>`` section as a "
        "``multidb.config.TenantTemplate``, or None) and "
        "``zeo_wait_timeout`` (seconds).  ``multidb check-config`` "
        "prints it.")

    def set_resolver(resolver):
        """Install ``resolver`` (an ``INameResolver``); once only (a
        second one raises ``ValueError``).  The layer above the core
        (tenants) plugs in here."""

    def add(name, storage, **db_kwargs):
        """Open a database now under ``name`` and return the ``ZODB.DB``.

        ``storage`` is a storage object or a zero-argument callable that
        returns one.  The name is checked under the collection's lock
        before anything is opened: a duplicate raises ``DuplicateName``
        and the factory is never called.  A database added with a storage
        object (not a factory) cannot be reopened, so it is never evicted.
        """

    def declare(name, factory, *, origin=None, private=False,
                dynamic=False, **db_kwargs):
        """Declare a database to be opened on first use.

        ``factory`` is a zero-argument callable returning a storage.
        Nothing is opened.  Raises ``DuplicateName`` for a known name.
        ``origin`` (say, a file and line) is named by errors about the
        name.  ``private``: only the calling thread may open the database
        until ``publish(name)`` (for everybody else it does not exist
        yet).  ``dynamic``: declared at run time by a resolver, not
        configured (``health()`` leaves it out unless asked).
        """

    def publish(name):
        """Make a private declaration visible to every thread."""

    def get(name, default=None):
        """``c[name]`` (opening a declared database), or ``default`` for
        a name the collection does not know (nor its resolver)."""

    def is_open(name):
        """Is the database of ``name`` open right now?  Never opens it.
        Raises ``UnknownDatabase`` for an unknown name."""

    def peek(name):
        """The database of ``name`` if it is open right now, else None.
        Never opens, waits or pins: the database may be evicted as soon
        as it is returned (for a quick look, say at its storage's last
        transaction)."""

    def wait_idle(name, timeout=0):
        """Wait up to ``timeout`` seconds until no connection of database
        ``name`` is in use (no group holds it); raise ``DatabaseInUse``
        if one still is.  Returns at once when the database is not open.
        Raises ``UnknownDatabase`` for an unknown name."""

    def settle(timeout=None):
        """Wait until no database is being opened or closed (by other
        threads); return whether that happened within ``timeout`` seconds
        (None: no limit)."""

    def remove(name, timeout=0):
        """Close the database if open and forget the name.

        Raises ``UnknownDatabase`` for an unknown name.  When connections
        to the database are open (a group is using it), waits up to
        ``timeout`` seconds for them to close, then raises
        ``DatabaseInUse`` having changed nothing.  Pooled connections of
        other databases are never touched.
        """

    def group(transaction_manager=None):
        """Return a new ``IConnectionGroup``; nothing is opened yet.

        ``None`` means the calling thread's default transaction manager.
        Raises ``GroupExists`` when a group is already open for the
        transaction manager.
        """

    def handle(name):
        """A stable stand-in for the database of ``name``
        (``multidb.handles.DatabaseHandle``, providing ZODB's
        ``IDatabase``), the same object for a name while it is held: every
        use goes to the database open under the name then (opening it),
        so it stays usable across evictions, and what is set through it
        (activity monitor, cache and pool sizes) is kept for every later
        opening.  For registries that keep a database for the life of
        the process (``IDatabase`` utilities, Zope's database table);
        ``multidb.handles.handle_factories`` makes factories of them for
        ``zope.app.appsetup.multi_database``.  Raises ``UnknownDatabase``
        for an unknown name."""

    def group_of(transaction_manager=None):
        """The open group of ``transaction_manager`` (default: the calling
        thread's), or None.  A web integration compares it before and
        after a request to find a group the request opened and left
        open."""

    def connections_in_use():
        """A dict: for each database open now, how many of its
        connections are handed out (opened and not closed yet), by groups
        and by plain ``db.open()`` alike.  Opens nothing."""

    def transaction(transaction_manager=None):
        """A context manager: a new group in a new transaction, committed
        on success, aborted on an exception, closed in both cases."""

    def run(func, *, attempts=3, backoff=0.1, max_backoff=5.0,
            retry_on=(), transaction_manager=None, note=None):
        """Call ``func(group)`` in a transaction and commit; retry on a
        transient error; return what ``func`` returned.

        Each attempt is a new group on ``transaction_manager`` (``None``:
        the calling thread's) in a new transaction, committed when
        ``func`` returns; ``note`` is added to the transaction's
        description.  ``func`` must do nothing but database work, since
        it may run up to ``attempts`` times.

        An error is transient, and the transaction is aborted and run
        again, when it is a ``transaction.interfaces.TransientError``
        (``ZODB.POSException.ConflictError``, ZEO's
        ``ClientDisconnected``, RelStorage's
        ``StorageDisconnectedDuringCommit``), when a data manager of the
        transaction says so (its ``should_retry``), when it is one of the
        exceptions by which the driver of a RelStorage database of the
        collection reports a lost connection (psycopg2's
        ``OperationalError`` and ``InterfaceError``), or an instance of
        one of the ``retry_on`` types.  Between attempts it sleeps
        ``backoff`` seconds, doubled at each attempt up to
        ``max_backoff``, times a random factor between 0.5 and 1 (so
        that processes that conflicted do not run again in step).  Any
        other error, or a transient one at the last attempt, is raised
        after the abort.  Raises ``GroupExists`` when the transaction
        manager has an open group already.
        """

    def health(names=None, *, timeout=None, all=False):
        """Check databases; return one ``multidb.health.DatabaseHealth``
        per database, in order: ``name``, ``reachable``, ``latency``
        (seconds), ``last_transaction`` (a UTC datetime) and ``error``.

        Each check opens a connection (and the database, when it is
        closed) with a transaction manager of its own, reads the root
        object's record from the storage (without unpickling it: the
        root's references, say to a database this collection does not
        have, are not followed), pings the server of a ZEO client, and
        reads the last transaction id.  ``error`` is one line naming the
        error and, when it says nothing by itself, its cause.  Checks run in threads; one that has not ended
        after ``timeout`` seconds (``None``: 6, a little more than the
        default ``zeo-wait-timeout``), such as one waiting for a ZEO
        server that is down, is reported unreachable.

        ``names`` defaults to the databases that are not tenants; with
        ``all``, every catalogued tenant is checked too.  A name not in
        the collection (nor in its tenants' catalog) raises
        ``UnknownDatabase`` before anything is checked: a check never
        declares a database.
        """

    def close():
        """Close every open database and forget every name.  Idempotent.
        """

    def __getitem__(name):
        """Return the ``ZODB.DB`` for name, opening it if declared.

        Raises ``UnknownDatabase`` (a ``KeyError``) for an unknown name.
        """

    def __contains__(name):
        """Is the name declared or open?"""

    def __len__():
        """The number of names, declared and open."""

    def __iter__():
        """Iterate over the names, declared and open."""


class INameResolver(Interface):
    """Plugs a name space into a collection (tenants do): names the
    collection does not know yet, and names that went away elsewhere.

    Installed with ``ICollection.set_resolver``.  The collection calls it
    without holding any of its locks.
    """

    def resolve(name):
        """The collection does not know ``name``: declare it (with
        ``dynamic=True``) if it exists, and return True; else False."""

    def open_failed(name, error):
        """Opening the dynamic database ``name`` failed with ``error``:
        return True when the name no longer exists (the resolver has
        removed it), and the caller gets ``UnknownDatabase`` instead of
        ``error``; ``'replaced'`` when the data behind the name was
        replaced (the resolver declared the name again if it could: the
        caller opens it once more); else False, and ``error`` is
        raised."""

    def refresh(group, name):
        """Called at a group's first ``get_connection(name)`` after each
        transaction boundary, to bring the collection up to date (names
        removed elsewhere).  Return False to be asked again at the
        group's next ``get_connection`` (say, when ``name`` is the
        resolver's own database), True otherwise."""

    def declare_all():
        """Declare every name the resolver knows (``health(all=True)``)."""


class IConnectionGroup(Interface):
    """Connections to databases of one collection, sharing one
    transaction manager, so that a commit is one two-phase commit across
    every database the group touched.

    ``Connection.get_connection(name)`` on any member returns the group's
    member for that name.  On close, every member goes back to its own
    database's pool.
    """

    transaction_manager = Attribute("The transaction manager of every member")

    connections = Attribute(
        "The mapping of database name to the member ``Connection``; it is "
        "the very ``connections`` mapping the members share.")

    opened_at = Attribute(
        "Where the group was opened, a formatted stack, when its "
        "collection tracks groups (``Collection(track_groups=True)`` or "
        "the environment variable ``MULTIDB_TRACK_GROUPS``); else None.")

    def get_connection(name):
        """Return the member connection for ``name``, opening it (and the
        database, if declared) on first use.

        Raises ``UnknownDatabase`` for an unknown name and ``GroupClosed``
        on a closed group.
        """

    def root(name):
        """Return the root object of database ``name``."""

    def release(name):
        """Send the member for ``name`` back to its database's pool.

        Members take part in every transaction boundary of the group
        (each one polls for invalidations), so a long-lived group that has
        touched many databases can let go of the ones it no longer needs.
        Raises ``ConnectionStateError`` when the member has changes in the
        current transaction.
        """

    def close():
        """Return every member to its own database's pool.  Idempotent.

        Raises ``ZODB.POSException.ConnectionStateError`` naming the
        database, and closes nothing, when a member has uncommitted
        changes.
        """


class IBackend(Interface):
    """Where tenants' storages live (one implementation per storage kind).

    Settings are a JSON-able dict recorded in the tenant's catalog record,
    so a tenant keeps its place when the template changes later.  They
    hold no credentials (a password comes from the configuration at each
    use) and hold the tenant's id (``'id'``), which the backend stores
    with the storage when it makes it (``prepare``, ``load``): a storage
    is known by that id, not by how the configuration spells its place.
    Settings of records made before ids were kept have none.  Snapshots
    and archives carry data in ZODB's FileStorage format, whatever the
    kind.
    """

    kind = Attribute("The storage kind, e.g. 'filestorage'")

    def from_template(template):
        """A classmethod: the backend built from a ``<tenants>`` template
        (a ``multidb.sections.TenantTemplate``) whose storage section is
        of this backend's kind, called on the backend class (see
        ``multidb.backends``).  Raises ``ValueError`` naming the key for
        a template it cannot honour."""

    def name_lock(name):
        """A context manager serializing lifecycle operations on the name
        among every process sharing the backend."""

    def check_lock(name):
        """Raise a ``TransientError`` when the name lock this thread holds
        was lost (and taken again) since the operation began: called
        before an operation commits."""

    def settings_for(name):
        """The storage settings of a new tenant called name, with a new
        tenant id."""

    def relocated(settings, name):
        """The settings the current configuration gives the recorded
        tenant name (settings: its record's), keeping its id and kind."""

    def factory(settings, *, name=None, create=False):
        """A zero-argument callable that opens the storage of settings;
        it raises ``MissingStorage`` rather than make a storage that is
        not there, unless create."""

    def describe(settings):
        """A short human description of where the data is."""

    def exists(settings):
        """Is there a storage at settings?"""

    def identify(settings):
        """The tenant id stored with the storage at settings' place, or
        None (no storage, or one without an id)."""

    def mark(settings):
        """Store settings' id with the storage at settings' place."""

    def same_place(a, b):
        """Do the settings a and b name one storage, however spelled?"""

    def place_key(settings):
        """A hashable key of settings' place: equal for the same place."""

    def prepare(settings):
        """Make what must exist before the storage is first opened, its
        id first."""

    def check_destroy(settings, name=None):
        """Raise ``NotWritable`` when the storage could not be deleted
        (before a drop commits)."""

    def destroy(settings):
        """Delete the storage and its snapshots; no error when absent.
        With an id in settings, only a storage carrying that id."""

    def is_locked(settings):
        """Does a process hold the storage open right now?"""

    def scan():
        """Yield (name, settings) for every tenant storage found, settings
        holding the id found with it (if any) and ``present`` (False:
        only companions of a storage, such as a snapshot folder)."""

    def stray_files():
        """What multidb may have left behind: (tenant name or None, path)
        for temporary files (or databases) and lock files."""

    def stray_in_use(path):
        """Is the stray path held by a process right now?"""

    def remove_stray(path):
        """Delete one of stray_files()."""

    def open_data(db, settings):
        """Return (binary file, length): a consistent copy of the committed
        data of the open database db, in FileStorage format."""

    def load(settings, fs_path, progress=None):
        """Replace the storage's data with the FileStorage file at fs_path,
        atomically (a crash leaves the old data or the new)."""

    def snapshot_path(settings, snapshot_id):
        """Where the snapshot file of that id lives."""

    def snapshot_ids(settings):
        """The snapshot ids found on disk."""

    def remove_snapshot(settings, snapshot_id):
        """Delete one snapshot (wherever it is kept, staged or not)."""

    def keep_snapshot(settings, snapshot_id, path):
        """The snapshot file at ``snapshot_path`` is complete: keep it
        where the backend keeps snapshots (a no-op for local files; a
        snapshot database stores it, and the local file goes).  Called
        before the catalog lists the snapshot."""

    def has_snapshot(settings, snapshot_id):
        """Is that snapshot kept (complete)?"""

    def describe_snapshot(settings, snapshot_id):
        """Where the snapshot is kept, for messages."""

    def copy_snapshot(settings, snapshot_id, dest, progress=None):
        """Copy the snapshot to the new local file dest; return its
        size."""

    def tmp_path(settings):
        """A temporary file name on the same file system as the storage's
        snapshots, for writes that end in an atomic rename."""

    def size(settings):
        """The bytes the storage takes where it lives (its files, its
        server database), without snapshots; None when it is missing.
        Cheap: never opens the storage."""

    def sizes(many):
        """``size`` of each settings of the sequence many, in order, as
        cheaply as the backend can (one query for all)."""

    def last_opened(settings):
        """When the storage was last opened by any process (seconds since
        the epoch), when the storage itself tells at no cost; else
        None."""

    def contents(settings, db=None):
        """(object count, last transaction id) of the storage's data,
        read without disturbing a process that uses it; db: the tenant's
        database when it is open in this process.  Raises
        ``MissingStorage``."""

    def pack(settings, db, t, *, gc=False):
        """Pack the storage to time t (seconds since the epoch), with
        garbage collection only when gc (whatever the template's
        ``pack-gc`` says); db: the tenant's database open in this
        process."""

    def storage_config(settings, *, secrets=False):
        """The text of the ZConfig storage section that opens the storage
        as multidb does, for ZODB's own tools; credentials only when
        secrets."""


class IServerSet(IBackend):
    """A backend over several servers (``<server>`` sections): a tenant's
    settings name its server (``settings['server']``), and a tenant can
    move between them (see ``multidb.backends.servers``)."""

    def server_names():
        """The configured servers' names, the main one first."""

    def check_server(server):
        """server if configured, else ``UnknownServer``."""

    def server_of(settings):
        """The server a tenant's settings name (the main one when they
        name none)."""

    def settings_for(name, server=None):
        """A new tenant's settings on server (default: the placement's
        choice among the servers that answer)."""

    def settings_on(settings, server):
        """The same tenant's settings (id, kind, template) on server."""

    def same_cluster(a, b):
        """Are the servers named a and b one server, however their
        connection settings are spelled (proved by asking them)?"""

    def status():
        """One dict per server: name, main, where, reachable, error,
        tenants, bytes, capacity."""

    def mover(settings, new):
        """The storage's part of moving the tenant of settings to new
        (``multidb.backends.pgmove.Move``)."""

    def move_state(settings):
        """The mark of an unfinished move on the tenant's storage there:
        ``{'move': id, 'role': 'source' or 'target'}``, or None."""

    def unfence(settings):
        """Take down the fence of a move that did not switch the record;
        True if there was one."""

    def clear_move_mark(settings):
        """The storage is the tenant's (the move switched the record):
        the mark goes."""

    def drop_copy(settings):
        """Delete a copy a move left (not the tenant's snapshots)."""


class ITenants(Interface):
    """The tenant lifecycle of a collection (``Collection.tenants``).

    The catalog, a database of the collection, holds one record per
    tenant; a tenant exists once its record is committed.  Opening a
    recorded tenant never makes its storage: when it is gone,
    ``MissingStorage`` names the tenant and what is missing (only create,
    clone and restore make storage).  An operation that loses a catalog
    write to another process or its server connection runs again; one
    whose commit went through although its connection was lost returns
    as done; when every attempt lost its connection it raises
    ``ServerUnavailable``, saying what state the tenant is in.  Every method
    is safe against a crash (kill -9) at any point: the result is the old
    state or the new one, plus at worst leftovers that ``repair()`` deletes.
    Operations on one name are serialized within the process.

    ``progress``, taken by the methods that copy data (clone, drop with
    an archive, snapshot, revert, archive, restore) and by expire, is
    None or a callable ``progress(n)``, called as the work goes on with
    the bytes just copied (expire: 1 per tenant done), say a progress
    bar's ``update``; it should return quickly.

    The implementation is also the collection's ``INameResolver``: its
    ``resolve``, ``refresh``, ``open_failed`` and ``declare_all`` are
    callbacks for the collection's core, not API; applications do not
    call them.
    """

    def create(name, *, expires=None, labels=None, init=None, server=None):
        """Make a tenant: its storage from the template, ``init(root)`` run
        on its root, and its record committed with the initial state in
        one transaction.  Returns the record.  ``server``: the tenant
        server to make it on (``<server>`` sections; default: the
        placement's choice), ``UnknownServer`` when none is so named.

        Raises ``InvalidName`` (before anything is touched) and
        ``TenantExists``.  ``expires`` is a datetime (naive: UTC), a
        timedelta or seconds from now, or text as the command takes it (a
        duration ``30d``, ``12h``, ``90m``, ``3600s``, or an ISO 8601 date
        or date and time, ``2030-01-31T12:00Z``); ``labels`` a dict or an
        iterable of keys, each label checked by the command's rule (see
        ``multidb.inputs.check_label``).  A bad expiry, label or ``init``
        name raises ``InvalidInput`` before anything is touched.
        """

    def clone(source, name, *, expires=None, labels=None, progress=None):
        """A new tenant holding a copy of source's committed data (taken
        consistently while source may be in use).  Returns the record."""

    def drop(name, *, archive_to=None, progress=None):
        """Delete a tenant, after archiving it to archive_to if given.
        Raises ``NoSuchTenant``, and ``DatabaseInUse`` (changing nothing)
        while a group uses the tenant, ``NotWritable`` (changing nothing)
        when its storage could not be deleted; ``DropIncomplete`` when the
        tenant is dropped but some of its storage could not be deleted
        after all (a partial success: repair deletes what is left)."""

    def move(name, to):
        """Move tenant name to the server named to (``<server>``
        sections), with writes refused only from the fence to the
        record's switch (see ``multidb.tenants.moving``); the old
        database is dropped once proved to be the move's.  Returns a
        dict: name, from, to, bytes, pause (seconds), catch_up,
        source_dropped, seconds.  ``NotConfigured`` without servers,
        ``UnknownServer``, ``InvalidInput`` when the tenant is on to
        already; nothing changes when the move fails before the switch.
        """

    def servers():
        """Each tenant server's status, a dict: name, main, where,
        reachable, error, tenants, bytes, capacity."""

    def get(name):
        """The record of name; ``NoSuchTenant`` if there is none."""

    def list():
        """Every record, sorted by name."""

    def is_tenant(name):
        """Is name a tenant's database of the collection (not the catalog
        nor a configured database)?  Answered from the tenants this
        process has declared, without reading the catalog (a request's
        path); a name not declared yet is looked up in the catalog (and
        declared when it is a tenant).  A tenant dropped by another
        process may still be declared: opening it then raises
        ``UnknownDatabase``."""

    def records(batch=1000):
        """Every record, sorted by name, as an iterator that reads the
        catalog batch records at a time, each batch in a transaction of
        its own (so a catalog of 100,000 tenants is never in memory at
        once; a tenant created or dropped meanwhile may or may not be
        seen)."""

    def snapshot(name, label=None, *, progress=None):
        """Take a consistent point-in-time copy while the tenant may be in
        use; return its id."""

    def snapshots(name):
        """The snapshots of a tenant, oldest first."""

    def revert(name, snapshot_id, *, progress=None):
        """Bring the tenant back to a snapshot, after snapshotting its
        current state (so a revert can be undone); returns the id of that
        new snapshot.  Raises ``NoSuchSnapshot``; ``DatabaseInUse`` while
        a group uses the tenant."""

    def archive(name, path, *, progress=None, checksum=None):
        """Write the tenant (data and record) to one portable file with a
        checksum ('crc32', the default, or 'sha256'); refuses to overwrite
        (``ArchiveExists``)."""

    def restore(path, name=None, *, replace=False, progress=None,
                trust_unsigned=False):
        """Make a tenant from an archive, under its archived name or name.
        A corrupt or truncated archive raises ``CorruptArchive`` and leaves
        the target untouched; an existing tenant needs replace=True (its
        current state is snapshotted first, or its raw bytes kept aside
        when it cannot be opened, and it keeps its own record: labels,
        expiry and snapshots; only its data is replaced).

        The archive's signature is checked with the configured archive
        key; an unsigned archive (or one no key can check) raises
        ``UnsignedArchive`` unless ``trust_unsigned``.  Before anything is
        replaced or recorded, the payload is read as a FileStorage and
        every global its pickles name is checked against the archive
        policy (``UnsafeArchive``)."""

    def expire(now=None, *, progress=None):
        """Archive and drop (``expire_action`` 'archive', the default) or
        drop ('drop') the tenants whose expiry is past; return what was
        done, one dict per tenant (name, action, archive, error).
        Archiving writes the tenant to an archive file,
        ``archive_dir/NAME-YYYYMMDDTHHMMSSZ.multidb``, before the drop
        deletes its storage.  'archive' without an ``archive_dir`` raises
        ``NotConfigured`` when a tenant is due, before anything is
        dropped."""

    def repair(*, dry_run=False):
        """Find (and unless dry_run, delete) leftovers: storage that
        provably belongs to no record (it carries a tenant id no record
        has), snapshots with no record, temporary files; report records
        whose storage is missing or was found elsewhere, and storage
        without an id that no record points to (never deleted).  Each
        deletion takes the name's lock.  Returns the findings (dicts:
        kind, name, path, action); a dry run reports the same ones, with
        'would delete' for 'deleted'."""

    def relocate(names=None, *, dry_run=False):
        """Point records at their storage as the configuration spells its
        place now, give records without a tenant id their id, and drop
        recorded credentials, where the storage is provably the tenant's.
        Moves and deletes nothing.  Returns one dict per record changed
        or refused: name, from, to, action."""

    def load():
        """Declare every catalogued tenant in the collection (lazily)."""

    def subscribe(callback, names=None, *, commits=False):
        """Call ``callback(event)`` for each change of the catalog from
        now on (names: only those tenants'), made by this process or
        another: a ``multidb.tenants.events.TenantEvent`` (``name``,
        ``kind`` 'created', 'changed' or 'dropped', ``serial``,
        ``record``), or one of kind 'resync' when events were missed (the
        watcher fell behind the change log).  Called in the watcher's
        thread, within moments of the change where the catalog's storage
        tells of commits (ZEO; PostgreSQL, through LISTEN/NOTIFY; this
        process's own changes), else within ``catalog_poll_interval``.
        With ``commits``, also an event of kind 'committed' (with the
        transaction's ``tid``) per commit to a tenant's database made by
        this process, or by another that sends them
        (``notify_commits``, a catalog on PostgreSQL), and one of kind
        'commits-missed' when such messages may have been lost.  Returns
        a subscription whose ``close()`` ends it."""

    def check_references(names=None):
        """Iterate over the objects stored in tenants' databases (names:
        some; default every tenant) that refer to another tenant's
        database: dicts of ``tenant``, ``oid`` (hex) and ``targets`` (the
        tenants referred to).  With ``isolation`` on (the default), a
        commit that would store such a reference raises
        ``CrossTenantReference``; this finds those stored before.  Reads
        every current record; raises ``NoSuchTenant`` for a wrong
        name."""

    def stats(names=None, *, full=False):
        """One ``multidb.tenants.stats.TenantStats`` per tenant (names:
        some; default every one), sorted by name: size on disk, open in
        this process or not, created and last opened.  Cheap: no tenant
        is opened.  With full, the object count and the last
        transaction's time too (each tenant's storage is read).  Raises
        ``NoSuchTenant`` for an unknown name before anything is read."""

    def pack(names=None, *, days=0, jobs=1, progress=None):
        """Pack the tenants (names: some; default every one) to ``days``
        days ago, ``jobs`` at a time (at most the collection's
        ``max_open`` less one; ``progress``: 1 per tenant done), always
        without garbage collection:
        an object only another database references is not garbage
        (collect garbage across databases with ``multidb gc``).  Returns
        one ``multidb.tenants.packing.PackResult`` per tenant, with its
        size before and after, or the error that stopped it."""

    def select(*, names=None, labels=None, states=None):
        """The records of the tenants chosen by names (``NoSuchTenant``
        for an unknown one), labels (a dict, or an iterable of ``key`` or
        ``key=value``: a tenant must have them all, a bare key with any
        value) and states (any of them), sorted by name; all tenants when
        none is given.  A label that no tenant (of the names given) has
        raises ``InvalidInput``: it is a typo more often than an empty
        selection."""

    def run_all(func, *, names=None, labels=None, states=None, jobs=1,
                run_id=None, attempts=3, progress=None, journal_dir=None,
                mark_ttl=30 * 86400, loader=None):
        """Run ``func(group, name)`` on each selected tenant (see
        ``select``), each in a transaction of its own: committed when
        func returns, aborted when it raises, tried again up to attempts
        times for a transient error (``Collection.run``).  A tenant's
        failure is recorded (its error's type and message) and the run
        goes on.  func must not commit or abort: its changes commit with
        the tenant's mark.  Returns a ``multidb.tenants.fleet.RunReport``:
        done, skipped, failed.

        Exactly once per run: the mark that a tenant is done for run_id
        commits in the tenant's own database with func's changes
        (``root['multidb.runs']``), so a run killed at any moment and
        called again with the same run_id skips the tenants it finished
        (reported as skipped) and runs the others.  run_id: 1 to 64
        ASCII letters, digits or ``._-`` (default: a new id, in the
        report).  Marks are kept mark_ttl seconds (at most 100 per
        tenant); resuming a run whose journal (or, for an id run_all
        made, the id itself) says it started earlier raises
        ``RunExpired`` before anything runs.  The journal,
        ``journal_dir/RUN_ID.json`` (default ``$MULTIDB_RUN_DIR`` or
        ``~/.local/state/multidb/runs``), is rewritten as the run goes:
        for reports, never for correctness.

        jobs > 1 runs tenants in that many worker processes (spawned),
        each tenant in one worker; func must then be importable (a
        dotted name ``package.module:func`` or a module-level function),
        else ``InvalidInput`` before anything runs.  A worker's group
        reaches the tenant it runs on (not the catalog nor other
        databases, which this process may hold).  A worker opens a tenant
        with the storage factory of its record, sent from here; when
        that does not pickle (RelStorage's), loader, a picklable
        zero-argument callable run in each worker, makes a collection
        (never opened) whose tenants' backend opens them: the command
        gives one loading its ``-C`` files; without one,
        ``NotConfigured`` before anything runs.  progress: True for a
        progress bar on stderr, or a callable called with 1 per tenant.
        Bad input (jobs < 1, run id, label, a function that cannot be
        imported) raises ``InvalidInput`` before anything runs."""

    def use_generations(manager, key=None):
        """Declare the schema manager of the tenants' data (a
        zope.generations ``ISchemaManager`` or its dotted name) and the
        key of ``root['zope.generations']`` its generation is kept under
        (default: its ``package_name``).  From then on a tenant created
        without an explicit ``init`` gets the configured init, then the
        manager's ``install`` and the current generation, in its first
        transaction."""

    def evolve(*, manager=None, key=None, names=None, labels=None,
               states=None, jobs=1, attempts=3, progress=None,
               journal_dir=None, loader=None):
        """Bring each selected tenant to the manager's current generation
        (default: the one of ``use_generations``), one transaction per
        step: ``manager.evolve(context, n)`` and the generation n commit
        together, so a step is never done twice and a failing step
        leaves the tenant at the last good generation (reported, the run
        going on).  A tenant with no recorded generation is at 0.  Runs
        through ``run_all``'s runner (jobs, progress, journal); returns
        its ``RunReport``, whose details give each tenant's generations
        (from, generation, target)."""

    def generation(group, name, *, key=None):
        """The generation recorded in tenant name's root (None when none
        is), read in group's transaction."""

    def check_generation(group, name, *, minimum=None):
        """The tenant's generation, read in group's transaction;
        ``TenantBehind`` when it is older than minimum (default: the
        manager's ``minimum_generation``): for applications that refuse
        to serve a tenant not evolved yet."""
