"""The ``/rest/v1`` endpoints: a PostgREST-compatible subset over asyncpg.

Request lifecycle: injected faults -> JWT -> profile (schema) -> parse -> one
transaction in which the JWT's role and claims are set locally
(``set_config('role', ..., true)``) before the single statement runs, so PostgreSQL
enforces grants and RLS. Every failure becomes PostgREST's error JSON.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from supabase_local import db
from supabase_local.auth import AuthError, Claims
from supabase_local.config import ServerConfig
from supabase_local.faults import ClientGone, FaultInjector
from supabase_local.rest.bodies import (
    body_column,
    existing_column,
    is_json_error,
    json_body,
    parsed_rows,
    unparsed_rows,
)
from supabase_local.rest.catalog import Catalog, Table, quote
from supabase_local.rest.errors import RestError, database_error
from supabase_local.rest.query import (
    RESERVED_PARAMS,
    Preferences,
    check_strict,
    page_window,
    parse_filters,
    parse_non_negative,
    parse_order,
    parse_prefer,
    parse_range_header,
    parse_select,
    unquote,
)
from supabase_local.rest.responses import (
    JSON_TYPE,
    accepted_shape,
    error_response,
    mutation_response,
    not_single,
    read_response,
    stripped,
)
from supabase_local.rest.rpc import (
    BODY_MEDIA_TYPES,
    JSON_MEDIA,
    WholeBody,
    call_sql,
    choose_overload,
)
from supabase_local.rest.sql import (
    Statement,
    order_sql,
    page_sql,
    row_json_sql,
    where_sql,
)

log = logging.getLogger(__name__)

# Query parameters that are never filters: the key may travel in the URL.
AUTH_PARAMS = {"apikey"}

# As PostgREST's pre-request settings: request.headers holds every header but Cookie, by
# lower-case name; request.cookies the cookies; both JSON objects.
_SET_REQUEST_CONTEXT = (
    "SELECT set_config('role', $1, true), set_config('request.jwt.claims', $2, true),"
    " set_config('request.method', $3, true), set_config('request.path', $4, true),"
    " set_config('request.headers', $5, true), set_config('request.cookies', $6, true)"
)


# An upsert counts its rows as PostgREST does, in a transaction-local setting: +1 for
# each row offered to the INSERT, -1 for each that updated an existing row instead, so
# the total is the number inserted (without needing SELECT privilege, unlike xmax).
_COUNT_INSERTED = (
    "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', true),"
    " '')::int, 0) + 1)::text, true) <> '0'"
)
_COUNT_UPDATED = (
    "set_config('pgrst.inserted', (coalesce(nullif(current_setting('pgrst.inserted', true),"
    " '')::int, 0) - 1)::text, true) <> '-1'"
)


class _RolledBack(Exception):
    """Leaves a transaction that ``Prefer: tx=rollback`` (or db-tx-end) rolls back."""

    def __init__(self, result: Any) -> None:
        self.result = result


def _request_headers_json(request: Request) -> str:
    headers = {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in request.headers.raw
        if name.lower() != b"cookie"
    }
    return json.dumps(headers)


class RestApi:
    def __init__(self, *, config: ServerConfig, faults: FaultInjector) -> None:
        self.config = config
        self.faults = faults
        self.catalog = Catalog(config.exposed_schemas)
        self.pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._background: set[asyncio.Task[None]] = set()  # strong refs until done

    # --- lifecycle -------------------------------------------------------------------

    async def startup(self) -> None:
        self.pool = await db.create_pool(
            self.config.database_url, max_size=self.config.pool_max_size
        )
        async with self.pool.acquire() as connection:
            await self.catalog.load(connection)
        # PostgREST reloads its schema cache on NOTIFY pgrst, 'reload schema'.
        self._listener = await db.connect(self.config.database_url)
        await self._listener.add_listener("pgrst", self._on_notify)

    async def shutdown(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        if self.pool is not None:
            await self.pool.close()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        if payload in ("", "reload schema") and self.pool is not None:
            task = asyncio.get_running_loop().create_task(self.catalog.reload(self.pool))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def routes(self) -> list[Route]:
        return [
            Route("/rest/v1/", self._root, methods=["GET", "HEAD"]),
            Route("/rest/v1/rpc/{function}", self._rpc, methods=["GET", "HEAD", "POST"]),
            Route(
                "/rest/v1/{table}",
                self._table,
                methods=["GET", "HEAD", "POST", "PATCH", "DELETE"],
            ),
        ]

    # --- plumbing --------------------------------------------------------------------

    async def _guarded(
        self, request: Request, handler: Callable[[Request, Claims, str], Awaitable[Response]]
    ) -> Response:
        async with self.faults.rest_request() as in_flight:
            try:
                fault = await self.faults.rest_fault(request, in_flight)
            except ClientGone:
                log.info("%s %s dropped: the client hung up while injected latency held it",
                         request.method, request.url.path)  # fmt: skip
                # Nobody reads it; nginx's "client closed request" names what happened.
                return Response(status_code=499)
            if fault is not None:
                status, body = fault
                return JSONResponse(body, status_code=status)
            return await self._handled(request, handler)

    async def _handled(
        self, request: Request, handler: Callable[[Request, Claims, str], Awaitable[Response]]
    ) -> Response:
        claims: Claims | None = None
        try:
            claims = self._authenticate(request)
            schema = self._profile(request)
            return await handler(request, claims, schema)
        except RestError as error:
            return error_response(error)
        except asyncpg.PostgresError as error:
            return error_response(database_error(error, role=claims.role if claims else "anon"))
        except (OSError, asyncpg.InterfaceError) as error:
            # The database went away or the pool is closing: PostgREST answers 503.
            log.warning("database unavailable: %s", error)
            return error_response(
                RestError(
                    503,
                    "PGRST001",
                    "Database client error. Retrying the connection.",
                    details=str(error),
                )
            )
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.url.path)
            return error_response(
                RestError(
                    500, "PGRST000", "supabase_local: unexpected server error", hint="see its log"
                )
            )

    def _authenticate(self, request: Request) -> Claims:
        apikey = request.headers.get("apikey") or request.query_params.get("apikey")
        bearer = None
        authorization = request.headers.get("authorization", "")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            bearer = value.strip()
        try:
            return self.config.gateway.authenticate(
                apikey=apikey, bearer=bearer, user_agent=request.headers.get("user-agent")
            )
        except AuthError as error:
            header = "Bearer" if apikey is None else 'Bearer error="invalid_token"'
            raise RestError(
                401,
                error.code,
                str(error),
                hint=error.hint,
                headers={"WWW-Authenticate": header},
            ) from error

    def _profile(self, request: Request) -> str:
        reading = request.method in ("GET", "HEAD")
        header = "accept-profile" if reading else "content-profile"
        requested = request.headers.get(header)
        exposed = self.config.exposed_schemas
        if requested is None:
            return exposed[0]
        if requested not in exposed:
            raise RestError(
                406,
                "PGRST106",
                f"Invalid schema: {requested}",
                hint=f"Only the following schemas are exposed: {', '.join(exposed)}",
            )
        return requested

    async def _in_transaction(
        self,
        request: Request,
        claims: Claims,
        work: Callable[[asyncpg.Connection], Awaitable[Any]],
        *,
        readonly: bool = False,
        preferences: Preferences | None = None,
    ) -> Any:
        assert self.pool is not None
        rollback = self._rolls_back(preferences)
        for attempt in (1, 2):
            try:
                async with (
                    self.pool.acquire() as connection,
                    connection.transaction(readonly=readonly),
                ):
                    await connection.execute(
                        _SET_REQUEST_CONTEXT,
                        claims.role,
                        json.dumps(claims.raw),
                        request.method,
                        request.url.path,
                        _request_headers_json(request),
                        json.dumps(dict(request.cookies)),
                    )
                    result = await work(connection)
                    if rollback:
                        # As PostgREST: deferred constraints fail now, then roll back.
                        await connection.execute("SET CONSTRAINTS ALL IMMEDIATE")
                        raise _RolledBack(result)
                    return result
            except _RolledBack as rolled_back:
                return rolled_back.result
            except asyncpg.InvalidCachedStatementError:
                # Defensive: every statement here returns fixed column types, but should a
                # schema change still invalidate a prepared statement, asyncpg cannot
                # re-prepare inside a transaction; it rolled back, so run it once more.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _rolls_back(self, preferences: Preferences | None) -> bool:
        """PostgREST's db-tx-end with the request's ``Prefer: tx=`` (when allowed)."""
        tx = preferences.tx if preferences is not None else None
        if tx is not None:
            return tx == "rollback"
        return self.config.db_tx_end.startswith("rollback")

    def _preferences(self, request: Request) -> Preferences:
        preferences = parse_prefer(
            request.headers.getlist("prefer"),
            allow_tx_override=self.config.tx_override_allowed,
        )
        check_strict(preferences)
        return preferences

    async def _lookup_table(self, schema: str, name: str) -> Table:
        assert self.pool is not None
        table = await self.catalog.table(self.pool, schema, name)
        if table is None:
            candidates = [t for (s, t) in self.catalog.tables if s == schema]
            close = difflib.get_close_matches(name, candidates, n=1)
            raise RestError(
                404,
                "PGRST205",
                f"Could not find the table '{schema}.{name}' in the schema cache",
                hint=f"Perhaps you meant the table '{schema}.{close[0]}'" if close else None,
            )
        return table

    # --- endpoints -------------------------------------------------------------------

    async def _root(self, request: Request) -> Response:
        async def handler(request: Request, claims: Claims, schema: str) -> Response:
            paths = {
                f"/{name}": {}
                for (table_schema, name) in self.catalog.tables
                if table_schema == schema
            }
            return JSONResponse(
                {"swagger": "2.0", "info": {"title": "supabase_local"}, "paths": paths}
            )

        return await self._guarded(request, handler)

    async def _table(self, request: Request) -> Response:
        async def handler(request: Request, claims: Claims, schema: str) -> Response:
            table = await self._lookup_table(schema, request.path_params["table"])
            if request.method in ("GET", "HEAD"):
                return await self._select(request, claims, table)
            if request.method == "POST":
                return await self._insert(request, claims, table)
            return await self._update_or_delete(request, claims, table)

        return await self._guarded(request, handler)

    async def _rpc(self, request: Request) -> Response:
        async def handler(request: Request, claims: Claims, schema: str) -> Response:
            return await self._call(request, claims, schema, request.path_params["function"])

        return await self._guarded(request, handler)

    # --- read ------------------------------------------------------------------------

    async def _select(self, request: Request, claims: Claims, table: Table) -> Response:
        single, strip_nulls = accepted_shape(request)
        query = request.query_params
        items = parse_select(query.get("select"))
        logic = parse_filters(list(query.multi_items()), skip=AUTH_PARAMS)
        order = parse_order(query.get("order"))
        offset, limit = page_window(
            parse_non_negative("limit", query.get("limit")),
            parse_non_negative("offset", query.get("offset")),
            parse_range_header(request.headers.get("range")),
        )
        preferences = self._preferences(request)
        statement = Statement()
        qualified = table.qualified
        where = where_sql(statement, logic, table.columns, table.name, qualified)
        ordering = order_sql(statement, order, table.columns, table.name, qualified)
        page = page_sql(statement, offset, limit)
        row_json = row_json_sql(statement, items, table.columns, table.name, "_pgrst_row")
        total = (
            f"(SELECT pg_catalog.count(*) FROM {qualified} WHERE {where})"
            if preferences.count
            else "NULL::bigint"
        )
        sql = (
            f"SELECT {total} AS total, pg_catalog.count(*) AS page_count,"
            f" coalesce(json_agg({row_json}), '[]')::text AS body"
            f" FROM (SELECT {qualified}.* FROM {qualified} WHERE {where}{ordering}{page})"
            " _pgrst_row"
        )

        # count=planned: the planner's estimate of the filtered table, as PostgREST's
        # EXPLAIN of its count query (a fresh or unanalysed table may be far off).
        explain_sql = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {qualified} WHERE {where}"
        planned = preferences.count_mode == "planned"

        async def work(connection: asyncpg.Connection) -> tuple[asyncpg.Record, int | None]:
            row = await connection.fetchrow(sql, *statement.args)
            estimate = None
            if planned:
                plan = await connection.fetchval(explain_sql, *statement.args)
                estimate = int(json.loads(plan)[0]["Plan"]["Plan Rows"])
            return row, estimate

        row, estimate = await self._in_transaction(
            request, claims, work, readonly=True, preferences=preferences
        )
        return read_response(
            request,
            body=row["body"],
            offset=offset,
            page_count=row["page_count"],
            total=estimate if planned else row["total"],
            single=single,
            strip_nulls=strip_nulls,
            preferences=preferences,
        )

    # --- write -----------------------------------------------------------------------

    async def _insert(self, request: Request, claims: Claims, table: Table) -> Response:
        single, strip_nulls = accepted_shape(request)
        preferences = self._preferences(request)
        raw = await request.body()
        columns_param = request.query_params.get("columns")
        names = (
            [unquote(name.strip()) for name in columns_param.split(",") if name.strip()]
            if columns_param is not None
            else []
        )
        parsed_here = not names
        if parsed_here:
            rows_text, rows = parsed_rows(raw)
            names = list(rows[0]) if rows else []
            if any(set(row) != set(names) for row in rows):
                raise RestError(400, "PGRST102", "All object keys must match")
        else:
            # ``columns`` names the keys, so nothing needs checking row by row: PostgreSQL
            # parses the body (a Python parse costs ~10 ms per 1,000 rows here) and its
            # JSON errors are turned into PGRST102 below.
            rows_text, rows = unparsed_rows(raw)
        columns = [body_column(table, name) for name in names]
        statement = Statement()
        body_param = statement.bind(rows_text, "jsonb" if preferences.missing_default else "json")
        column_list = ", ".join(quote(name) for name in columns)
        if rows == []:
            return mutation_response(
                request,
                table,
                201,
                None,
                0,
                preferences,
                single,
                strip_nulls,
                body_if_representation="[]",
            )
        if not columns:
            source_sql = f"INSERT INTO {table.qualified} DEFAULT VALUES"
            if rows is None or len(rows) != 1:
                raise RestError(400, "PGRST102", "All object keys must match")
        elif preferences.missing_default:
            values = []
            for name in columns:
                default = table.columns[name].default
                if default is None:
                    values.append(f"_pgrst_body.{quote(name)}")
                else:
                    key = statement.bind(name, "text")
                    values.append(
                        f"CASE WHEN _pgrst_elem ? {key} THEN _pgrst_body.{quote(name)}"
                        f" ELSE {default} END"
                    )
            source_sql = (
                f"INSERT INTO {table.qualified} ({column_list}) SELECT {', '.join(values)}"
                f" FROM jsonb_array_elements({body_param}) AS _pgrst_elem"
                f" CROSS JOIN LATERAL jsonb_populate_record(NULL::{table.qualified},"
                " _pgrst_elem) AS _pgrst_body"
            )
        else:
            source_sql = (
                f"INSERT INTO {table.qualified} ({column_list}) SELECT {column_list}"
                f" FROM json_populate_recordset(NULL::{table.qualified}, {body_param})"
                " AS _pgrst_body"
            )
        if columns and preferences.resolution == "merge-duplicates":
            source_sql += f" WHERE {_COUNT_INSERTED}"
        source_sql += self._on_conflict_sql(request, table, columns, preferences)
        try:
            return await self._run_mutation(
                request,
                claims,
                table,
                source_sql,
                statement,
                preferences,
                single,
                strip_nulls,
                success_status=201,
            )
        except asyncpg.PostgresError as error:
            if not parsed_here and is_json_error(error):
                raise RestError(
                    400, "PGRST102", "Empty or invalid json", details=error.message
                ) from error
            raise

    def _on_conflict_sql(
        self, request: Request, table: Table, columns: list[str], preferences: Preferences
    ) -> str:
        if preferences.resolution is None:
            return ""
        on_conflict = request.query_params.get("on_conflict")
        if on_conflict:
            target = [
                existing_column(table, unquote(name.strip())) for name in on_conflict.split(",")
            ]
        else:
            target = list(table.primary_key)
        if not target:
            raise RestError(
                400, "PGRST100", "on_conflict is required: the table has no primary key"
            )
        target_sql = ", ".join(quote(name) for name in target)
        updatable = [name for name in columns if name not in target] or columns
        if preferences.resolution == "ignore-duplicates" or not updatable:
            return f" ON CONFLICT ({target_sql}) DO NOTHING"
        assignments = ", ".join(f"{quote(name)} = EXCLUDED.{quote(name)}" for name in updatable)
        return f" ON CONFLICT ({target_sql}) DO UPDATE SET {assignments} WHERE {_COUNT_UPDATED}"

    async def _update_or_delete(self, request: Request, claims: Claims, table: Table) -> Response:
        single, strip_nulls = accepted_shape(request)
        preferences = self._preferences(request)
        query = request.query_params
        logic = parse_filters(list(query.multi_items()), skip=AUTH_PARAMS)
        verb = "UPDATE" if request.method == "PATCH" else "DELETE"
        if not logic.children:
            # Supabase loads pg-safeupdate for API roles; answer as it does.
            raise RestError(
                400,
                "21000",
                f"{verb} requires a WHERE clause",
                hint="Add a filter (e.g. ?seq=eq.1) to choose the rows",
            )
        statement = Statement()
        qualified = table.qualified
        if verb == "UPDATE":
            payload = json_body(await request.body())
            if not isinstance(payload, dict):
                raise RestError(
                    400, "PGRST102", "Empty or invalid json", details="PATCH takes one JSON object"
                )
            columns = [body_column(table, name) for name in payload]
            if not columns:
                return mutation_response(
                    request,
                    table,
                    200,
                    "[]",
                    0,
                    preferences,
                    single,
                    strip_nulls,
                    body_if_representation="[]",
                )
            body_param = statement.bind(json.dumps(payload), "json")
            assignments = ", ".join(
                f"{quote(name)} = _pgrst_body.{quote(name)}" for name in columns
            )
            where = where_sql(statement, logic, table.columns, table.name, qualified)
            source_sql = (
                f"UPDATE {qualified} SET {assignments}"
                f" FROM json_populate_record(NULL::{qualified}, {body_param}) AS _pgrst_body"
                f" WHERE {where}"
            )
        else:
            where = where_sql(statement, logic, table.columns, table.name, qualified)
            source_sql = f"DELETE FROM {qualified} WHERE {where}"
        return await self._run_mutation(
            request,
            claims,
            table,
            source_sql,
            statement,
            preferences,
            single,
            strip_nulls,
            success_status=200,
        )

    async def _run_mutation(
        self,
        request: Request,
        claims: Claims,
        table: Table,
        source_sql: str,
        statement: Statement,
        preferences: Preferences,
        single: bool,
        strip_nulls: bool,
        *,
        success_status: int,
    ) -> Response:
        returning = preferences.returning
        if returning == "representation":
            items = parse_select(request.query_params.get("select"))
            row_json = row_json_sql(statement, items, table.columns, table.name, "_pgrst_row")
            returning_sql = f" RETURNING {table.qualified}.*"
            body_sql = f"coalesce(json_agg({row_json}), '[]')::text"
        elif returning == "headers-only" and table.primary_key:
            keys = ", ".join(quote(name) for name in table.primary_key)
            returning_sql = f" RETURNING {keys}"
            body_sql = "coalesce(json_agg(_pgrst_row), '[]')::text"
        else:
            # RETURNING 1 needs no SELECT privilege: minimal works for write-only roles.
            returning_sql = " RETURNING 1"
            body_sql = "NULL::text"
        sql = (
            f"WITH pgrst_source AS ({source_sql}{returning_sql})"
            f" SELECT pg_catalog.count(*) AS page_count, {body_sql} AS body,"
            " nullif(current_setting('pgrst.inserted', true), '')::int AS inserted"
            " FROM pgrst_source AS _pgrst_row"
        )

        async def work(connection: asyncpg.Connection) -> asyncpg.Record:
            row = await connection.fetchrow(sql, *statement.args)
            # Raising inside the transaction rolls the change back, as PostgREST does.
            if single and row["page_count"] != 1:
                raise not_single(row["page_count"])
            limit = preferences.max_affected
            if preferences.strict and limit is not None and row["page_count"] > limit:
                raise RestError(
                    400,
                    "PGRST124",
                    "Query result exceeds max-affected preference constraint",
                    details=f"The query affects {row['page_count']} rows",
                )
            return row

        row = await self._in_transaction(request, claims, work, preferences=preferences)
        if success_status == 201 and preferences.resolution == "merge-duplicates":
            # PostgREST: an upsert that inserted no row (only updated) answers 200.
            inserted = row["inserted"]
            if inserted is None or inserted <= 0:
                success_status = 200
        return mutation_response(
            request,
            table,
            success_status,
            row["body"],
            row["page_count"],
            preferences,
            single,
            strip_nulls,
        )

    # --- rpc -------------------------------------------------------------------------

    async def _call(self, request: Request, claims: Claims, schema: str, name: str) -> Response:
        assert self.pool is not None
        single, strip_nulls = accepted_shape(request)
        reading = request.method in ("GET", "HEAD")
        query = request.query_params
        if reading:
            candidates = {
                key: value
                for key, value in query.multi_items()
                if key not in RESERVED_PARAMS and key not in AUTH_PARAMS
            }
        body: WholeBody | None = None
        if not reading:
            raw = await request.body()
            media_type = request.headers.get("content-type", JSON_MEDIA).split(";")[0].strip()
            media_type = media_type.lower() or JSON_MEDIA
            if media_type in BODY_MEDIA_TYPES and media_type != JSON_MEDIA:
                # Only a function with one unnamed parameter of the matching type takes
                # a text, XML or binary body.
                body, candidates = WholeBody(media_type, raw), {}
            else:
                payload = json_body(raw, empty_ok=True)
                if payload is None:
                    payload = {}
                # The body as is, for a function with one unnamed json/jsonb parameter.
                body = WholeBody(JSON_MEDIA, raw if raw.strip() else b"{}")
                candidates = payload if isinstance(payload, dict) else None
        overloads = await self.catalog.function_overloads(self.pool, schema, name)
        function, arguments = choose_overload(
            schema, name, overloads, candidates, reading, body=body
        )
        filter_params = [
            (key, value)
            for key, value in query.multi_items()
            if key not in arguments and key not in AUTH_PARAMS
        ]
        preferences = self._preferences(request)
        sql, statement, page_offset = call_sql(
            function,
            arguments,
            filter_params,
            query,
            header_range=parse_range_header(request.headers.get("range")),
            count=preferences.count,
        )

        async def work(connection: asyncpg.Connection) -> asyncpg.Record:
            return await connection.fetchrow(sql, *statement.args)

        row = await self._in_transaction(
            request, claims, work, readonly=reading, preferences=preferences
        )
        if function.returns_void:
            return Response(status_code=204, headers={"Content-Range": "*/*"})
        if function.returns_set:
            return read_response(
                request,
                body=row["body"],
                offset=page_offset,
                page_count=row["page_count"],
                total=row["total"],
                single=single,
                strip_nulls=strip_nulls,
                preferences=preferences,
            )
        text = row["body"] if row["body"] is not None else "null"
        if strip_nulls:
            text = json.dumps(stripped(json.loads(text)))
        content = b"" if request.method == "HEAD" else text.encode("utf-8")
        # A function returning one value counts as one row, as in PostgREST.
        headers = {"Content-Range": f"0-0/{1 if preferences.count else '*'}"}
        counted = [p for p in preferences.applied if p.startswith("count=")]
        if counted:
            headers["Preference-Applied"] = ", ".join(counted)
        return Response(content, status_code=200, media_type=JSON_TYPE, headers=headers)
