"""Triggers that keep the local sealed-chunk digests honest: any write to the log or to its
Supabase deliveries inside a sealed chunk drops that chunk's stored digest, so that the
next run hashes the chunk again (reconciliation/stored.py)."""

from django.db import migrations

UNSEAL_SQL = """
CREATE OR REPLACE FUNCTION reconciliation_unseal_events() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Once per statement, whatever its size: the transition tables give the seqs, and a
    -- sealed chunk they fall in loses its stored digest (an index probe per chunk).
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM reconciliation_sealedchunk
        WHERE chunk_no = ANY (ARRAY(SELECT DISTINCT (o.seq - 1) >> 10 FROM old_rows AS o));
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        DELETE FROM reconciliation_sealedchunk
        WHERE chunk_no = ANY (ARRAY(SELECT DISTINCT (n.seq - 1) >> 10 FROM new_rows AS n));
    END IF;
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM reconciliation_sealedchunk;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION reconciliation_unseal_delivery() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- Called only for the rows the triggers' WHEN clauses pick: a Supabase delivery that
    -- is skipped (its event is then not expected in Supabase) appearing, going, or
    -- changing its skippedness. Marking deliveries sent never calls it.
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        DELETE FROM reconciliation_sealedchunk WHERE chunk_no = (OLD.event_id - 1) >> 10;
    END IF;
    IF TG_OP IN ('UPDATE', 'INSERT') THEN
        DELETE FROM reconciliation_sealedchunk WHERE chunk_no = (NEW.event_id - 1) >> 10;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER reconciliation_unseal_events_insert AFTER INSERT ON events_event
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconciliation_unseal_events();
CREATE TRIGGER reconciliation_unseal_events_update AFTER UPDATE ON events_event
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconciliation_unseal_events();
CREATE TRIGGER reconciliation_unseal_events_delete AFTER DELETE ON events_event
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION reconciliation_unseal_events();
CREATE TRIGGER reconciliation_unseal_events_truncate AFTER TRUNCATE ON events_event
    FOR EACH STATEMENT EXECUTE FUNCTION reconciliation_unseal_events();
CREATE TRIGGER reconciliation_unseal_deliveries_insert AFTER INSERT ON events_delivery
    FOR EACH ROW WHEN (NEW.sink = 'supabase' AND NEW.status = 'skipped')
    EXECUTE FUNCTION reconciliation_unseal_delivery();
CREATE TRIGGER reconciliation_unseal_deliveries_update AFTER UPDATE ON events_delivery
    FOR EACH ROW WHEN (
        (OLD.sink = 'supabase' AND OLD.status = 'skipped')
            IS DISTINCT FROM (NEW.sink = 'supabase' AND NEW.status = 'skipped')
        OR (OLD.event_id <> NEW.event_id AND NEW.sink = 'supabase' AND NEW.status = 'skipped')
    )
    EXECUTE FUNCTION reconciliation_unseal_delivery();
CREATE TRIGGER reconciliation_unseal_deliveries_delete AFTER DELETE ON events_delivery
    FOR EACH ROW WHEN (OLD.sink = 'supabase' AND OLD.status = 'skipped')
    EXECUTE FUNCTION reconciliation_unseal_delivery();
"""

DROP_SQL = """
DROP TRIGGER IF EXISTS reconciliation_unseal_events_insert ON events_event;
DROP TRIGGER IF EXISTS reconciliation_unseal_events_update ON events_event;
DROP TRIGGER IF EXISTS reconciliation_unseal_events_delete ON events_event;
DROP TRIGGER IF EXISTS reconciliation_unseal_events_truncate ON events_event;
DROP TRIGGER IF EXISTS reconciliation_unseal_deliveries_insert ON events_delivery;
DROP TRIGGER IF EXISTS reconciliation_unseal_deliveries_update ON events_delivery;
DROP TRIGGER IF EXISTS reconciliation_unseal_deliveries_delete ON events_delivery;
DROP FUNCTION IF EXISTS reconciliation_unseal_events();
DROP FUNCTION IF EXISTS reconciliation_unseal_delivery();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("reconciliation", "0005_sealed_chunks_and_run_mode"),
        ("events", "0006_checksums_numbers_as_jsonb_prints_them"),
    ]
    operations = [migrations.RunSQL(UNSEAL_SQL, DROP_SQL)]
