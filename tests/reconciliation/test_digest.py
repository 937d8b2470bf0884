"""The local digest (SQL over events_event) equals the Supabase RPC on equal rows, and
changes with every content field."""

import pytest

from reconciliation.digest import Meter, local_chunk_digests, remote_chunk_digests

pytestmark = pytest.mark.django_db


def _both(from_seq: int, to_seq: int, chunk_size: int):
    meter = Meter()
    local = local_chunk_digests(
        from_seq=from_seq, to_seq=to_seq, chunk_size=chunk_size, meter=meter
    )
    remote = remote_chunk_digests(
        from_seq=from_seq, to_seq=to_seq, chunk_size=chunk_size, meter=meter
    )
    return local, remote, meter


def test_local_and_remote_digests_are_equal_on_identical_data(log):
    # given: varied content (non-ASCII, nested payloads, numbers, explicit occurred_at)
    seqs = log.publish(40, unicode="ü café ✓", big=10**16, neg=-3.25, empty={}, flag=None)
    seqs += log.publish(25, event_type="db.timeout", error="boom")
    log.mirror()

    # when / then: equal for every chunk size and alignment, and not all zeros
    for from_seq, to_seq, chunk_size in [
        (1, seqs[-1] + 1, 1),
        (1, seqs[-1] + 1, 7),
        (3, seqs[-1] - 5, 16),
        (1, seqs[-1] + 1, 10_000),
    ]:
        local, remote, meter = _both(from_seq, to_seq, chunk_size)
        assert local == remote
        assert local and all(chunk.digest != "0" for chunk in local)
        assert sum(chunk.count for chunk in local) == to_seq - from_seq
        assert meter.round_trips_local == 1 and meter.round_trips_supabase == 1


@pytest.mark.parametrize(
    "assignment",
    [
        "event_type = event_type || 'x'",
        "source = source || 'x'",
        "criticality = 'performance'",
        "occurred_at = occurred_at + interval '1 microsecond'",
        "received_at = received_at - interval '1 microsecond'",
        """payload = payload || '{"extra": 1}'""",
        "checksum = repeat('0', 64)",
    ],
)
def test_the_digest_covers_every_field(log, assignment):
    seqs = log.publish(10)
    log.mirror()
    log.sql(f"UPDATE public.monitoring_events SET {assignment} WHERE seq = %s", seqs[4])

    local, remote, _ = _both(seqs[0], seqs[-1] + 1, 5)

    assert local[1] == remote[1]
    assert local[0].count == remote[0].count
    assert local[0].digest != remote[0].digest


def test_skipped_events_are_left_out_of_the_local_digest(log):
    log.publish(5)
    log.publish(3, event_type="test.debug")  # routed to the websocket only
    log.mirror()

    local, remote, _ = _both(1, 9, 100)

    assert local == remote
    assert local[0].count == 5
