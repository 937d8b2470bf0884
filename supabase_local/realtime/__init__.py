"""Supabase Realtime-compatible server for supabase_local (Phoenix channels protocol).

Public surface: :class:`Realtime`. The app builds one per server
(``Realtime(config=config, faults=injector)``), mounts ``Realtime.routes``, awaits
``startup()`` after migrations and ``shutdown()`` at exit. Modules: ``protocol``
(serialisations), ``capture`` (trigger-based change capture), ``rls`` (visibility),
``filters``, ``presence``, ``channels`` (state and fan-out), ``server`` (endpoints).
"""

from __future__ import annotations

from .server import Realtime

__all__ = ["Realtime"]
