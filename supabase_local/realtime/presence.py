"""Presence state of one topic, in Phoenix.Presence's wire shapes.

State: ``{key: {"metas": [{...tracked payload..., "phx_ref": ref}, ...]}}``; a change is
announced as ``presence_diff`` ``{"joins": state-shaped, "leaves": state-shaped}``.
Re-tracking replaces the channel's meta: the diff leaves the old meta and joins the new
one, which carries ``phx_ref_prev`` as Phoenix does.

Invariant: each joined channel owns at most one meta per topic, identified by its
``phx_ref``; leaving or disconnecting removes it.
"""

from __future__ import annotations

import itertools
from typing import Any

_refs = itertools.count(1)


def _new_ref() -> str:
    return f"F{next(_refs):012x}"


class TopicPresence:
    def __init__(self) -> None:
        # key -> {phx_ref: meta}; dicts keep insertion order, like Phoenix's metas list.
        self._entries: dict[str, dict[str, dict[str, Any]]] = {}
        # owner (a channel object) -> (key, phx_ref)
        self._owners: dict[object, tuple[str, str]] = {}

    def state(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        return {key: {"metas": list(metas.values())} for key, metas in self._entries.items()}

    def is_empty(self) -> bool:
        return not self._entries

    def track(self, owner: object, key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Track or re-track ``owner``; return the ``presence_diff`` payload."""
        leaves: dict[str, Any] = {}
        previous = self._owners.get(owner)
        meta = dict(payload)
        ref = _new_ref()
        meta["phx_ref"] = ref
        if previous is not None:
            old_key, old_ref = previous
            old_meta = self._remove(old_key, old_ref)
            if old_meta is not None:
                leaves = {old_key: {"metas": [old_meta]}}
                meta["phx_ref_prev"] = old_ref
        self._entries.setdefault(key, {})[ref] = meta
        self._owners[owner] = (key, ref)
        return {"joins": {key: {"metas": [meta]}}, "leaves": leaves}

    def untrack(self, owner: object) -> dict[str, Any] | None:
        """Forget ``owner``'s meta; return the diff, or ``None`` if it tracked nothing."""
        previous = self._owners.pop(owner, None)
        if previous is None:
            return None
        key, ref = previous
        meta = self._remove(key, ref)
        if meta is None:
            return None
        return {"joins": {}, "leaves": {key: {"metas": [meta]}}}

    def _remove(self, key: str, ref: str) -> dict[str, Any] | None:
        metas = self._entries.get(key)
        if metas is None:
            return None
        meta = metas.pop(ref, None)
        if not metas:
            del self._entries[key]
        return meta
