"""Response shaping as PostgREST does it: media types, single objects, stripped
nulls, ``Content-Range`` and the 200/206/416 and 201/204 statuses."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from supabase_local.rest.catalog import Table
from supabase_local.rest.errors import RestError
from supabase_local.rest.query import Preferences

JSON_TYPE = "application/json; charset=utf-8"
OBJECT_TYPE = "application/vnd.pgrst.object+json"


def error_response(error: RestError) -> Response:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def accepted_shape(request: Request) -> tuple[bool, bool]:
    """(single object wanted, nulls stripped) from Accept; 406 for what we cannot give."""
    accept = request.headers.get("accept", "*/*")
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        strip_nulls = "nulls=stripped" in parameters
        if media_type in (OBJECT_TYPE, "application/vnd.pgrst.object"):
            return True, strip_nulls
        if media_type in ("application/json", "application/*", "*/*", ""):
            return False, strip_nulls
    raise RestError(406, "PGRST107", f"None of these media types are available: {accept}")


def not_single(row_count: int) -> RestError:
    return RestError(
        406,
        "PGRST116",
        "Cannot coerce the result to a single JSON object",
        details=f"The result contains {row_count} rows",
    )


def stripped(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: stripped(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [stripped(item) for item in value]
    return value


def single_body(body: str, row_count: int, strip_nulls: bool) -> str:
    if row_count != 1:
        raise not_single(row_count)
    row = json.loads(body)[0]
    return json.dumps(stripped(row) if strip_nulls else row)


def content_range(lower: int, page_count: int, total: int | None) -> str:
    upper = lower + page_count - 1
    in_range = lower <= upper and total != 0
    range_part = f"{lower}-{upper}" if in_range else "*"
    return f"{range_part}/{'*' if total is None else total}"


def shaped_rows(body: str, count: int, *, single: bool, strip_nulls: bool) -> tuple[str, str]:
    """A JSON array of rows as the client asked for it: one object (``single``), nulls
    stripped, or as is; with its media type."""
    if single:
        return single_body(body, count, strip_nulls), OBJECT_TYPE + "; charset=utf-8"
    if strip_nulls:
        return json.dumps(stripped(json.loads(body))), JSON_TYPE
    return body, JSON_TYPE


def read_response(
    request: Request,
    *,
    body: str,
    offset: int,
    page_count: int,
    total: int | None,
    single: bool,
    strip_nulls: bool,
    preferences: Preferences,
) -> Response:
    status = 200
    if total is not None:
        if offset > total:
            raise RestError(
                416,
                "PGRST103",
                "Requested range not satisfiable",
                details=f"An offset of {offset} was requested, but there are only {total} rows.",
                headers={"Content-Range": f"*/{total}"},
            )
        if page_count < total:
            status = 206
    headers = {"Content-Range": content_range(offset, page_count, total)}
    # A read applies only the count preference; return/resolution concern writes.
    counted = [p for p in preferences.applied if p.startswith("count=")]
    if counted:
        headers["Preference-Applied"] = ", ".join(counted)
    body, media_type = shaped_rows(body, page_count, single=single, strip_nulls=strip_nulls)
    content = b"" if request.method == "HEAD" else body.encode("utf-8")
    return Response(content, status_code=status, media_type=media_type, headers=headers)


def mutation_response(
    request: Request,
    table: Table,
    success_status: int,
    body: str | None,
    row_count: int,
    preferences: Preferences,
    single: bool,
    strip_nulls: bool,
    *,
    body_if_representation: str | None = None,
) -> Response:
    headers = {"Content-Range": f"*/{row_count if preferences.count else '*'}"}
    if preferences.applied:
        headers["Preference-Applied"] = ", ".join(preferences.applied)
    if preferences.returning == "representation":
        text = body if body is not None else (body_if_representation or "[]")
        text, media_type = shaped_rows(text, row_count, single=single, strip_nulls=strip_nulls)
        return Response(
            text.encode("utf-8"), status_code=success_status, media_type=media_type, headers=headers
        )
    inserting = request.method == "POST"
    if preferences.returning == "headers-only" and body and inserting:
        keys = json.loads(body)
        if len(keys) == 1:
            query = "&".join(f"{name}=eq.{value}" for name, value in keys[0].items())
            headers["Location"] = f"/{table.name}?{query}"
    # An insert keeps its status without a body (201, or 200 for an upsert that only
    # updated); an update or delete without one is 204.
    status = success_status if inserting else 204
    return Response(status_code=status, headers=headers)
