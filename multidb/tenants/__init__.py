"""Tenants: a catalog of tenant databases and their lifecycle."""
