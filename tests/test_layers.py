"""The floors of multidb import only downward, and the core (collection
and groups) knows nothing of tenants, backends or configuration."""
import ast
import pathlib

import multidb

PACKAGE = pathlib.Path(multidb.__file__).parent

# Lowest first.  A module may import from its own floor or below.
FLOORS = [
    {'multidb.errors', 'multidb.interfaces', 'multidb.names',
     'multidb.retry', 'multidb.files', 'multidb.inputs'},
    {'multidb.glue'},
    {'multidb.collection', 'multidb.group', 'multidb.health',
     'multidb.handles'},
    {'multidb.tenants', 'multidb.tenants.catalog', 'multidb.tenants.archive',
     'multidb.tenants.crashpoints',
     'multidb.backends', 'multidb.backends.filestorage',
     'multidb.backends.relstorage', 'multidb.backends.pgnotify',
     'multidb.backends.servers', 'multidb.backends.pgmove'},
    # The parts of Tenants, then the class they make.
    {'multidb.tenants.catalogio', 'multidb.tenants.locks',
     'multidb.tenants.copies', 'multidb.tenants.maintenance',
     'multidb.tenants.isolation', 'multidb.tenants.events',
     'multidb.tenants.fleet', 'multidb.tenants.generations',
     'multidb.tenants.stats', 'multidb.tenants.packing',
     'multidb.tenants.moving'},
    {'multidb.tenants.lifecycle'},
    # Configuration: positions and key datatypes, section datatypes and
    # ZEO clients, then loading and building.
    {'multidb.sources', 'multidb.datatypes'},
    {'multidb.sections', 'multidb.zeoconfig'},
    {'multidb.config'},
    # The configuration written back for ZODB's tools (export-config, gc).
    {'multidb.exporting'},
    # The command: its framework, arguments and output, the commands,
    # then main().
    {'multidb.cli.framework', 'multidb.cli.arguments', 'multidb.cli.output'},
    {'multidb.cli.collection_commands', 'multidb.cli.tenant_commands',
     'multidb.cli.copy_commands', 'multidb.cli.maintenance_commands',
     'multidb.cli.fleet_maintenance_commands',
     'multidb.cli.fleet_commands', 'multidb.cli.server_commands'},
    {'multidb.cli', 'multidb.cli.__main__'},
    # Web applications: the WSGI middleware, and Pyramid (which reuses
    # its resolvers).
    {'multidb.wsgi', 'multidb.pyramid', 'multidb.zope',
     'multidb.zope.folder'},
]
# The package's facade re-exports from every floor.
FACADE = 'multidb'


def module_name(path):
    rel = path.relative_to(PACKAGE.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__':
        parts.pop()
    return '.'.join(parts)


def imports(path, mods):
    """Every multidb module path imports, at any depth (function-level
    imports included)."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # from package import module: the module; else the package.
            names = [f'{node.module}.{a.name}'
                     if f'{node.module}.{a.name}' in mods else node.module
                     for a in node.names]
        else:
            continue
        for name in names:
            if name == 'multidb' or name.startswith('multidb.'):
                found.add(name)
    return found


def modules():
    return {module_name(p): p for p in PACKAGE.rglob('*.py')}


def floor_of(name, known):
    # 'multidb.files.tmp_name' -> its module's floor.
    while name not in known and '.' in name:
        name = name.rsplit('.', 1)[0]
    for i, floor in enumerate(FLOORS):
        if name in floor:
            return name, i
    return name, None


def graph():
    mods = modules()
    edges = {}
    for name, path in mods.items():
        targets = set()
        for imported in imports(path, mods):
            target, _ = floor_of(imported, mods)
            if target != name and target in mods:
                targets.add(target)
        edges[name] = targets
    return edges


def test_every_module_has_a_floor():
    unplaced = [m for m in modules() if m != FACADE and
                floor_of(m, modules())[1] is None]
    assert unplaced == []


def test_imports_go_only_downward():
    mods = modules()
    wrong = []
    for name, targets in graph().items():
        if name == FACADE:
            continue
        _, mine = floor_of(name, mods)
        for target in targets:
            _, theirs = floor_of(target, mods)
            if target == FACADE or theirs is None or theirs > mine:
                wrong.append(f'{name} -> {target}')
    assert wrong == []


def test_core_knows_nothing_of_tenants():
    core = ('multidb.collection', 'multidb.group', 'multidb.glue')
    edges = graph()
    for name in core:
        assert not {t for t in edges[name]
                    if t.startswith(('multidb.tenants', 'multidb.backends',
                                     'multidb.config', 'multidb.cli'))}


def test_no_import_cycle():
    edges = graph()
    state = {}

    def visit(node, stack):
        state[node] = 'active'
        for nxt in edges.get(node, ()):
            if nxt == FACADE:
                continue
            if state.get(nxt) == 'active':
                raise AssertionError(' -> '.join(stack + [node, nxt]))
            if nxt not in state:
                visit(nxt, stack + [node])
        state[node] = 'done'
    for node in edges:
        if node not in state and node != FACADE:
            visit(node, [])


def test_private_members_of_zodb_only_in_glue():
    # Attribute names ZODB, transaction and RelStorage keep private, used
    # outside multidb.glue: none.
    private = {'_needs_to_join', '_cache', '_store_objects', '_storage',
               '_lock', '_pos', '_txn', '_retryable', '_adapter',
               '_returnToPool', 'pool', 'historical_pool', '_reader'}
    found = []
    for name, path in modules().items():
        if name == 'multidb.glue':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                base = node.value
                # self._lock and the like are the module's own.
                if isinstance(base, ast.Name) and base.id in ('self', 'cls'):
                    continue
                found.append(f'{name}:{node.lineno} .{node.attr}')
    assert found == []
