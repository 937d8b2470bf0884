"""A notification at commit when Supabase deliveries are created.

A statement-level trigger on the delivery ledger calls ``pg_notify`` once per statement
that inserts a pending Supabase delivery. PostgreSQL delivers notifications only when the
transaction commits (never for a rollback), in commit order, and folds the identical ones
of a transaction into one, so a ``manage.py supabase_writer`` process listening on the
channel (events/supabase_writer.py) learns of each commit as it happens, whichever process
or statement made it, at no cost to the publishing request.
"""

from django.db import migrations

CHANNEL = "monitor_supabase_pending"

FORWARD = f"""
CREATE FUNCTION events_delivery_supabase_pending_notify() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF EXISTS (SELECT 1 FROM new_deliveries WHERE sink = 'supabase' AND status = 'pending') THEN
        PERFORM pg_notify('{CHANNEL}', '');
    END IF;
    RETURN NULL;
END
$fn$;
CREATE TRIGGER events_delivery_supabase_pending_notify
    AFTER INSERT ON events_delivery
    REFERENCING NEW TABLE AS new_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION events_delivery_supabase_pending_notify();
"""

BACKWARD = """
DROP TRIGGER IF EXISTS events_delivery_supabase_pending_notify ON events_delivery;
DROP FUNCTION IF EXISTS events_delivery_supabase_pending_notify();
"""


class Migration(migrations.Migration):
    dependencies = [("events", "0006_checksums_numbers_as_jsonb_prints_them")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
