"""The views: a tenant's notes as text, as JSON, and adding one.

``request.tenant_root`` is the root of the tenant's database in this
request's transaction (an unknown tenant is a 404 before a view runs);
pyramid_tm commits what a view changed when it returns.
"""
from persistent.list import PersistentList
from pyramid.httpexceptions import HTTPBadRequest
from pyramid.view import view_config


def _notes(request, create=False):
    root = request.tenant_root
    notes = root.get('notes')
    if notes is None and create:
        notes = root['notes'] = PersistentList()
    return notes if notes is not None else []


@view_config(route_name='notes', request_method='GET', renderer='string')
def list_notes(request):
    """``GET /TENANT/notes``: the tenant's notes, one a line."""
    notes = _notes(request)
    lines = [f"{request.tenant}: {len(notes)} notes"]
    lines += [f"{i}. {text}" for i, text in enumerate(notes, 1)]
    return '\n'.join(lines) + '\n'


@view_config(route_name='notes', request_method='POST', renderer='string')
def add_note(request):
    """``POST /TENANT/notes`` with a form field ``text``: add a note;
    the answer is its number."""
    text = request.POST.get('text', '').strip()
    if not text:
        raise HTTPBadRequest("a note needs a text")
    notes = _notes(request, create=True)
    notes.append(text)
    request.response.status_int = 201
    return f"{request.tenant}: note {len(notes)} added\n"


@view_config(route_name='notes_json', request_method='GET', renderer='json')
def notes_json(request):
    """``GET /TENANT/notes.json``: ``{"tenant", "count", "notes"}``."""
    notes = list(_notes(request))
    return {'tenant': request.tenant, 'count': len(notes), 'notes': notes}
