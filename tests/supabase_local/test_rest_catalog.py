"""The schema cache's reloads on a miss: shared and spaced, so no caller can make the
server reload continuously (any holder of the anon key can name unknown tables)."""

from __future__ import annotations

import asyncio
import contextlib
import time

from supabase_local.rest import catalog as catalog_module
from supabase_local.rest.catalog import Catalog


class CountingPool:
    """Stands in for asyncpg's pool: answers the catalogue queries, counting the loads."""

    def __init__(self) -> None:
        self.table_rows: list[dict] = []
        self.loads = 0

    @contextlib.asynccontextmanager
    async def acquire(self):
        yield self

    async def fetch(self, query: str, *args):
        if query == catalog_module._TABLES_SQL:
            self.loads += 1
            await asyncio.sleep(0)  # a real load yields to the event loop
            return list(self.table_rows)
        return []


def _table_row(name: str) -> dict:
    return {"schema": "public", "name": name, "column": "id", "type": "bigint",
            "nullable": False, "default_expr": None}  # fmt: skip


async def test_misses_for_unknown_tables_reload_at_most_once_per_interval():
    pool = CountingPool()
    catalog = Catalog(("public",), miss_reload_interval=0.25)
    await catalog.load(pool)

    deadline = time.monotonic() + 1.0
    misses = 0
    while time.monotonic() < deadline:
        # A burst of concurrent misses, as many anonymous requests at once.
        found = await asyncio.gather(
            *(catalog.table(pool, "public", f"nope{i}") for i in range(20))
        )
        assert found == [None] * 20
        misses += 20

    assert misses >= 40
    # The start load, then one per 0.25 s at most (+1 for the window's edges).
    assert pool.loads <= 1 + 5


async def test_a_table_created_behind_the_servers_back_is_found_on_its_first_miss():
    pool = CountingPool()
    catalog = Catalog(("public",), miss_reload_interval=0.05)
    await catalog.load(pool)
    pool.table_rows = [_table_row("created_later")]

    table = await catalog.table(pool, "public", "created_later")

    assert table is not None and list(table.columns) == ["id"]


async def test_notify_reloads_without_waiting_for_the_interval():
    pool = CountingPool()
    catalog = Catalog(("public",), miss_reload_interval=3600)
    await catalog.load(pool)

    await asyncio.wait_for(catalog.reload(pool), 5)

    assert pool.loads == 2
