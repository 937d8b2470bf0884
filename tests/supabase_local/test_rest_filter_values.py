"""Arbitrary text survives the client's quoting and the server's filter grammar."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tests.supabase_local.conftest import event_row

# PostgreSQL text cannot hold NUL; surrogates are not valid UTF-8.
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=12,
)


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(texts, min_size=1, max_size=4, unique=True), probe=texts)
def test_eq_and_in_match_exactly_the_stored_text(service_client, supabase_local, values, probe):
    # ``in.()`` is the empty list in PostgREST's grammar, so a list holding only the
    # empty string cannot be written; the client sends exactly that.
    assume(values != [""] and probe != "")
    base = (uuid.uuid4().int % 10**12) * 10**6 + 1
    rows = [event_row(base + i, event_type=value) for i, value in enumerate(values)]
    service_client.table("monitoring_events").insert(rows, returning="minimal").execute()
    try:

        def matching(query):
            response = query.gte("seq", base).lt("seq", base + len(values)).execute()
            return sorted(row["event_type"] for row in response.data)

        table = service_client.table("monitoring_events")
        assert matching(table.select("event_type").in_("event_type", values)) == sorted(values)
        assert matching(table.select("event_type").eq("event_type", probe)) == (
            [probe] if probe in values else []
        )
        assert matching(table.select("event_type").in_("event_type", [probe])) == (
            [probe] if probe in values else []
        )
        assert matching(table.select("event_type").not_.in_("event_type", [probe])) == sorted(
            value for value in values if value != probe
        )
    finally:
        supabase_local.sql(
            "DELETE FROM public.monitoring_events WHERE seq >= %s AND seq < %s",
            base,
            base + len(values),
        )
