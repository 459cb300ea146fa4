"""Data generations per tenant, in the manner of zope.generations.

An application declares a *schema manager*: an object with
``generation`` (the current one), ``minimum_generation`` (the oldest its
code still runs on) and ``evolve(context, generation)``, which brings a
database from ``generation - 1`` to ``generation`` (``context.connection``
is the tenant's connection); optionally ``install(context)``, run on a
new tenant.  That is zope.generations' ``ISchemaManager``, and its
``SchemaManager(minimum_generation, generation, package_name)`` (modules
``evolveN`` defining ``evolve(context)``) works unchanged; multidb does
not import zope.generations (``pip install multidb[generations]`` brings
it for those who want its ``SchemaManager``).

The storage layout is zope.generations' too: a tenant's generation is
``root['zope.generations'][key]`` (a ``PersistentMapping``), ``key``
being the name the manager is known by (zope.generations' utility name;
by default the manager's ``package_name``).  A database evolved by
zope.generations reads the same here, and the other way round.

Unlike zope.generations, a tenant with no recorded generation is taken to
be at generation 0, not new: tenants made before the application declared
its manager hold data of the first schema.  New tenants are stamped with
the current generation as they are created (``stamp_new``, run by the
``init`` hook of ``Tenants.create``: see ``Tenants.use_generations``).

See ``ITenants.evolve`` for how a tenant is evolved: one transaction per
step, so a failing step leaves the tenant at the last good generation.
"""
import logging
from typing import Any
from typing import Callable
from typing import Dict
from typing import Optional
from typing import Union

from persistent.mapping import PersistentMapping

from multidb.errors import InvalidInput
from multidb.errors import TenantBehind
from multidb.inputs import resolve_dotted

log = logging.getLogger(__name__)

#: The root key of the generations mapping (zope.generations'
#: ``generations_key``).
GENERATIONS_KEY = 'zope.generations'

# A schema manager, or the dotted name of one.
_Manager = Union[Any, str]


class Context:
    """What an evolve step gets (zope.generations' ``Context``): the
    tenant's ``connection``, and here also its ``name`` and the
    connection ``group`` of the transaction."""

    def __init__(self, connection: Any, name: Optional[str] = None,
                 group: Any = None) -> None:
        self.connection = connection
        self.name = name
        self.group = group


def resolve_manager(manager: _Manager) -> Any:
    """The schema manager that manager is or names (a dotted name,
    ``package.module:obj``); ``InvalidInput`` when it cannot be imported
    or is not a schema manager."""
    obj = resolve_dotted(manager) if isinstance(manager, str) else manager
    for attr in ('generation', 'minimum_generation', 'evolve'):
        if not hasattr(obj, attr):
            raise InvalidInput('schema manager', manager,
                               f"it has no {attr!r}: expected an"
                               f" ISchemaManager (generation,"
                               f" minimum_generation, evolve)")
    return obj


def manager_key(manager: Any, key: Optional[str] = None) -> str:
    """The key a manager's generation is kept under: key, or the
    manager's ``package_name`` (zope.generations' SchemaManager)."""
    key = key or getattr(manager, 'package_name', None)
    if not key or not isinstance(key, str):
        raise InvalidInput('generations key', key,
                           "give the key the manager's generation is kept"
                           " under (the manager has no package_name)")
    return key


def generation_of(root: Any, key: str) -> Optional[int]:
    """The generation recorded in a tenant's root, None when none is."""
    generations = root.get(GENERATIONS_KEY)
    if generations is None:
        return None
    return generations.get(key)


def _set_generation(root, key, generation):
    generations = root.get(GENERATIONS_KEY)
    if generations is None:
        generations = root[GENERATIONS_KEY] = PersistentMapping()
    generations[key] = generation


def stamp_new(root: Any, manager: Any, key: str,
              name: Optional[str] = None) -> None:
    """For a new tenant (in its first transaction): run the manager's
    ``install`` if it has one, and record the current generation, as
    zope.generations does for a new database."""
    install = getattr(manager, 'install', None)
    if install is not None:
        install(Context(root._p_jar, name))
    _set_generation(root, key, manager.generation)


class StampingInit:
    """An ``init`` for ``Tenants.create``: the application's own init
    (a callable or a dotted name, or None) first, then ``stamp_new``."""

    def __init__(self, manager: Any, key: str,
                 init: Union[Callable[[Any], Any], str, None] = None) -> None:
        self.manager = manager
        self.key = key
        self.init = init

    def __call__(self, root: Any) -> None:
        if self.init is not None:
            resolve_dotted(self.init)(root)
        stamp_new(root, self.manager, self.key)

    def __repr__(self):
        return f"<StampingInit {self.key!r} after {self.init!r}>"


def check(root: Any, manager: Any, key: str, name: str,
          minimum: Optional[int] = None) -> int:
    """A tenant's generation; ``TenantBehind`` when it is below minimum
    (default: the manager's ``minimum_generation``)."""
    if minimum is None:
        minimum = manager.minimum_generation
    current = generation_of(root, key) or 0
    if current < minimum:
        raise TenantBehind(name, key, current, minimum)
    return current


class EvolveTask:
    """Bring one tenant to the manager's current generation, one
    transaction per step (a task of the fleet runner: see
    ``multidb.tenants.fleet``).  Picklable when the manager is given by
    its dotted name, so that worker processes can run it."""

    def __init__(self, manager: _Manager, key: str, attempts: int = 3,
                 target: Optional[int] = None) -> None:
        self.manager = manager
        self.key = key
        self.attempts = attempts
        self.target = target

    def __call__(self, collection: Any, name: str) -> Dict[str, Any]:
        manager = resolve_manager(self.manager)
        key = self.key
        target = manager.generation if self.target is None else self.target
        seen = {}

        def step(group):
            root = group.root(name)
            current = generation_of(root, key) or 0
            seen.setdefault('from', current)
            seen['at'] = current
            if current >= target:
                return False
            nxt = current + 1
            txn = group.transaction_manager.get()
            txn.note(f"{name}/{key}: evolving to generation {nxt}")
            log.debug("%s/%s: evolving to generation %d", name, key, nxt)
            manager.evolve(Context(group.get_connection(name), name, group),
                           nxt)
            _set_generation(root, key, nxt)
            seen['next'] = nxt
            return True

        # Each step is its own transaction (with retries of transient
        # errors): the generation recorded commits with the step's
        # changes, so a step is never done twice, and a failing step
        # leaves the tenant at the last good generation.
        try:
            while collection.run(step, attempts=self.attempts):
                seen['at'] = seen.pop('next')
        except Exception as e:
            seen.pop('next', None)
            e.multidb_detail = {'from': seen.get('from'),
                                'generation': seen.get('at'),
                                'target': target}
            raise
        return {'from': seen['from'], 'generation': seen['at'],
                'target': target}
