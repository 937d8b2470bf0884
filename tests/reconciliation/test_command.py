"""``manage.py reconcile``: exit codes, JSON, tables, repair, bad input."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

pytestmark = pytest.mark.django_db


def _reconcile(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("reconcile", *args, "--quiet", stdout=out)
    except SystemExit as exit_:
        return int(exit_.code), out.getvalue()
    return 0, out.getvalue()


def test_a_clean_run_exits_0_and_prints_a_summary(log):
    log.publish(40)
    log.mirror()

    code, out = _reconcile()

    assert code == 0
    assert "Reconciliation run #" in out and "Clean" in out
    assert "100.0000%" in out


def test_full_re_hashes_every_chunk_and_says_so(log):
    seqs = log.publish(1100)
    log.mirror()
    _reconcile()  # seals chunk 0 locally

    code, out = _reconcile("--full", "--json")
    incremental_code, incremental = _reconcile("--json")

    run = json.loads(out)["run"]
    assert (code, run["mode"], run["to_seq"]) == (0, "full", seqs[-1])
    assert run["chunks_rehashed"] == 2  # the sealed chunk, and the 76 newest seqs live
    again = json.loads(incremental)["run"]
    assert (incremental_code, again["mode"], again["chunks_rehashed"]) == (0, "incremental", 1)


def test_discrepancies_exit_1_and_json_lists_them(log):
    seqs = log.publish(40)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[5])

    code, out = _reconcile("--json")

    assert code == 1
    document = json.loads(out)
    assert document["exit_code"] == 1
    assert document["run"]["status"] == "discrepancies"
    assert document["run"]["counts"] == {"missing_in_supabase": 1}
    assert document["run"]["round_trips"]["supabase"] >= 1
    assert document["discrepancies"] == [
        {
            "seq": seqs[5],
            "category": "missing_in_supabase",
            "fields": [],
            "criticality": "system",
            "details": document["discrepancies"][0]["details"],
            "repaired": False,
        }
    ]
    assert document["repair"] is None


def test_repair_exits_0_when_everything_is_fixed(log):
    seqs = log.publish(40)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[5])
    log.sql("""UPDATE public.monitoring_events SET payload = '{}' WHERE seq = %s""", seqs[6])

    code, out = _reconcile("--repair", "--json")

    assert code == 0
    document = json.loads(out)
    assert document["repair"]["upserted"] == 2 and document["repair"]["remaining"] == []
    assert all(d["repaired"] for d in document["discrepancies"])
    assert _reconcile()[0] == 0


def test_an_extra_stays_without_delete_extras(log):
    seqs = log.publish(10)
    log.mirror()
    log.sql(
        "INSERT INTO public.monitoring_events SELECT 99, event_type, source, criticality,"
        " occurred_at, received_at, payload, checksum FROM public.monitoring_events"
        " WHERE seq = %s",
        seqs[0],
    )

    assert _reconcile("--repair")[0] == 1
    code, out = _reconcile("--repair", "--delete-extras")
    assert code == 0
    assert "1 deleted" in out


def test_a_range_is_honoured(log):
    seqs = log.publish(50)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[40])

    code, out = _reconcile("--from-seq", "1", "--to-seq", str(seqs[30]), "--json")

    assert code == 0
    run = json.loads(out)["run"]
    assert (run["from_seq"], run["to_seq"]) == (1, seqs[30])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-seq", "0"], "--from-seq must be 1 or more"),
        (["--to-seq", "-4"], "--to-seq must be 1 or more"),
        (["--from-seq", "10", "--to-seq", "5"], "is below --from-seq"),
        (["--delete-extras"], "only makes sense with --repair"),
    ],
)
def test_bad_input_is_refused_with_exit_2(log, args, message):
    with pytest.raises(CommandError, match=message) as raised:
        call_command("reconcile", *args, "--quiet")
    assert raised.value.returncode == 2


def test_not_a_number_is_refused(log):
    with pytest.raises(CommandError, match="invalid int value"):
        call_command("reconcile", "--from-seq", "ten")


def test_unconfigured_supabase_is_refused_with_exit_2(settings, db):
    settings.SUPABASE_URL = ""
    with pytest.raises(CommandError, match="not configured") as raised:
        call_command("reconcile", "--quiet")
    assert raised.value.returncode == 2


def test_a_run_that_cannot_take_the_lock_exits_3(log):
    from reconciliation.services import ADVISORY_LOCK_KEY
    from tests.fixtures.database import other_connection

    with other_connection() as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ADVISORY_LOCK_KEY])
        code, out = _reconcile("--json")
    assert code == 3
    assert json.loads(out)["run"]["status"] == "skipped"


def test_the_progress_bar_goes_to_stderr_and_leaves_stdout_to_the_json(log, capsys):
    seqs = log.publish(300)
    log.mirror()
    log.sql("DELETE FROM public.monitoring_events WHERE seq = %s", seqs[7])
    out = StringIO()

    with pytest.raises(SystemExit):
        call_command("reconcile", "--json", stdout=out)

    assert json.loads(out.getvalue())["run"]["counts"] == {"missing_in_supabase": 1}
