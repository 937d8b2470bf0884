"""Supabase Realtime-compatible server for supabase_local (Phoenix channels protocol).

Public surface: :class:`Realtime`. The app builds one per server, mounts
``Realtime.routes`` and awaits ``startup()`` after migrations and ``shutdown()`` at exit.
"""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute


class Realtime:
    """Placeholder with the final interface; the implementation follows."""

    def __init__(self, *, config: Any, faults: Any) -> None:
        self.config = config
        self.faults = faults
        self.routes: list[BaseRoute] = []

    async def startup(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None


__all__ = ["Realtime"]
