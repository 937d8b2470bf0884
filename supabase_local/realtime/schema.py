"""The ``realtime`` schema a Supabase project has: ``realtime.messages`` and its helpers.

Installed by the bootstrap before the project's migrations, so a migration can write
policies ``ON realtime.messages`` and triggers that call ``realtime.send`` or
``realtime.broadcast_changes``, exactly as it would on a hosted project:

* ``realtime.messages``: one row per broadcast (or authorization probe); RLS on. Its
  SELECT policies decide who may receive a private topic, its INSERT policies who may
  send on it (``realtime/authorization.py`` evaluates them as the joining user).
* ``realtime.topic()``: the topic being authorised or sent, for policies.
* ``realtime.send(payload, event, topic, private)``: inserts a broadcast; like Supabase's
  it runs as the caller (so RLS applies) and turns any failure into a WARNING rather
  than failing the caller's transaction. The payload gets an ``id`` when it has none.
* ``realtime.broadcast_changes(...)``: a row trigger's helper sending a Postgres-Changes
  shaped payload (``record``, ``old_record``, ``operation``, ``table``, ``schema``).

Differences from Supabase: the table is not partitioned by day (a sweep deletes rows
older than three days instead), and there is no binary payload column.
"""

REALTIME_SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS realtime;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role;

CREATE TABLE IF NOT EXISTS realtime.messages (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    topic text NOT NULL,
    extension text NOT NULL,
    payload jsonb,
    event text,
    private boolean DEFAULT false,
    updated_at timestamp NOT NULL DEFAULT timezone('utc', now()),
    inserted_at timestamp NOT NULL DEFAULT timezone('utc', now()),
    PRIMARY KEY (id, inserted_at)
);
CREATE INDEX IF NOT EXISTS messages_replay_idx
    ON realtime.messages (topic, inserted_at DESC) WHERE private AND extension = 'broadcast';
CREATE INDEX IF NOT EXISTS messages_inserted_at_idx ON realtime.messages (inserted_at);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO anon, authenticated, service_role;

CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE AS $fn$
    SELECT nullif(current_setting('realtime.topic', true), '')::text
$fn$;

CREATE OR REPLACE FUNCTION realtime.send(
    payload jsonb, event text, topic text, private boolean DEFAULT true
) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    message_id uuid := gen_random_uuid();
BEGIN
    BEGIN
        PERFORM set_config('realtime.topic', topic, true);
        INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
        VALUES (
            message_id,
            CASE WHEN payload ? 'id' THEN payload
                 ELSE jsonb_set(payload, '{id}', to_jsonb(message_id)) END,
            event, topic, private, 'broadcast'
        );
    EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'ErrorSendingBroadcastMessage: %', SQLERRM;
    END;
END
$fn$;

CREATE OR REPLACE FUNCTION realtime.broadcast_changes(
    topic_name text, event_name text, operation text, table_name text, table_schema text,
    new record, old record, level text DEFAULT 'ROW'
) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF level = 'STATEMENT' THEN
        RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
    END IF;
    IF operation NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
        RAISE EXCEPTION 'Unexpected operation type: %', operation;
    END IF;
    PERFORM realtime.send(
        jsonb_build_object('old_record', old, 'record', new, 'operation', operation,
                           'table', table_name, 'schema', table_schema),
        event_name, topic_name
    );
END
$fn$;
"""
