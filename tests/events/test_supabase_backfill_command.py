"""manage.py supabase_backfill re-sends a range idempotently."""

import pytest
from django.core.management import CommandError, call_command

from events.models import Delivery
from events.services import event_publish_batch

pytestmark = pytest.mark.django_db


def test_backfill_sends_a_range_and_is_safe_to_repeat(django_supabase, capsys):
    from events.supabase_sink import supabase_breaker

    supabase_breaker().close()
    seqs = [
        r.seq
        for r in event_publish_batch(
            events=[{"event_type": "a", "source": "s", "payload": {"i": i}} for i in range(5)]
            + [{"event_type": "debug.trace", "source": "s"}]
        )
    ]
    call_command(
        "supabase_backfill", "--from-seq", str(seqs[1]), "--to-seq", str(seqs[3]), "--quiet"
    )
    remote = [row["seq"] for row in django_supabase.sql("SELECT seq FROM monitoring_events")]
    assert sorted(remote) == seqs[1:4]

    call_command("supabase_backfill", "--from-seq", str(seqs[0]), "--quiet")
    remote = sorted(row["seq"] for row in django_supabase.sql("SELECT seq FROM monitoring_events"))
    assert remote == seqs[:5]  # the debug event is not routed to Supabase
    assert set(
        Delivery.objects.filter(event_id__in=seqs[:5], sink="supabase").values_list(
            "status", flat=True
        )
    ) == {"sent"}
    assert "re-sent 5 events" in capsys.readouterr().out


@pytest.mark.parametrize(
    "args", [["--from-seq", "0"], ["--from-seq", "5", "--to-seq", "2"], ["--batch-size", "0"]]
)
def test_bad_ranges_are_refused(args, django_supabase):
    with pytest.raises(CommandError):
        call_command("supabase_backfill", *args)


def test_backfill_without_supabase_settings_says_so(settings):
    settings.SUPABASE_URL = ""
    with pytest.raises(CommandError, match="not configured"):
        call_command("supabase_backfill")
