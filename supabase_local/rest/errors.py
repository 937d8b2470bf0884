"""PostgREST's error JSON and statuses.

A ``RestError`` is raised anywhere in the REST layer and turned into PostgREST's
``{"code", "message", "details", "hint"}`` body by the request handler. Database errors
are mapped from their SQLSTATE with PostgREST's own table (``errors.hs``).
"""

from __future__ import annotations

from typing import Any

import asyncpg


class RestError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Any = None,
        hint: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.hint = hint
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "details": self.details,
            "hint": self.hint,
            "message": self.message,
        }


def bad_query(message: str, details: str | None = None) -> RestError:
    return RestError(400, "PGRST100", message, details=details)


# SQLSTATE -> HTTP status, exact codes first, then two-character classes; everything
# else is 400, as in PostgREST.
_STATUS_BY_SQLSTATE = {
    "23503": 409,  # foreign_key_violation
    "23505": 409,  # unique_violation
    "25006": 405,  # read_only_sql_transaction
    "40001": 409,  # serialization_failure
    "42883": 404,  # undefined_function
    "42P01": 404,  # undefined_table
    "42P17": 500,  # infinite_recursion
    "57P01": 503,  # admin_shutdown
    "P0001": 400,  # raise_exception
}
_STATUS_BY_CLASS = {
    "08": 503,
    "09": 500,
    "0L": 403,
    "0P": 403,
    "25": 500,
    "28": 403,
    "2D": 500,
    "38": 500,
    "39": 500,
    "3B": 500,
    "40": 500,
    "53": 503,
    "54": 500,
    "55": 500,
    "57": 500,
    "58": 500,
    "F0": 500,
    "HV": 500,
    "P0": 500,
    "XX": 500,
}


def database_error(error: asyncpg.PostgresError, *, role: str) -> RestError:
    sqlstate = error.sqlstate or "XX000"
    headers: dict[str, str] = {}
    if sqlstate == "42501":
        # PostgREST answers 401 to the anonymous role (it could authenticate) and 403 to
        # an authenticated one (it could not do more by authenticating).
        if role == "anon":
            status = 401
            headers["WWW-Authenticate"] = "Bearer"
        else:
            status = 403
    else:
        status = _STATUS_BY_SQLSTATE.get(sqlstate) or _STATUS_BY_CLASS.get(sqlstate[:2], 400)
    return RestError(
        status,
        sqlstate,
        error.message,
        details=getattr(error, "detail", None),
        hint=getattr(error, "hint", None),
        headers=headers,
    )
