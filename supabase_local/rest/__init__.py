"""PostgREST-compatible ``/rest/v1`` API: parsing (``query``), SQL (``sql``), the schema
cache (``catalog``), PostgREST errors (``errors``) and the endpoints (``api``)."""

from supabase_local.rest.api import RestApi

__all__ = ["RestApi"]
