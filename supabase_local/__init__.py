"""A Supabase-compatible server for development and tests.

``supabase_local`` serves the subset of Supabase's HTTP and WebSocket protocols that
the Monitor product and the official clients use (PostgREST under ``/rest/v1``,
Realtime under ``/realtime/v1``) over a real PostgreSQL database to which the
project's own ``supabase/migrations/*.sql`` are applied.

Invariants:
- it imports nothing from the Django apps;
- the role named in the request's JWT becomes the PostgreSQL role of the statement,
  so row level security is enforced by PostgreSQL, never by Python;
- no SQL text is ever built from request text: values are bound parameters and
  identifiers come from the catalogue.

Start it with ``python -m supabase_local``; see ``docs/supabase_local.md``.
"""
