-- Monitor: the broadcast trigger of 20261129000000_private_broadcast.sql, made linear in
-- the statement's rows. It gathered a message's events with `events || jsonb_build_array(row)`,
-- which copies the whole jsonb array for every row: one 500-row upsert cost the trigger
-- ~76 ms and a 2,000-row one ~406 ms, so a backlog (larger upserts) made every row dearer
-- just when the sink was behind. A PL/pgSQL array appended to in place is linear (1.9 /
-- 5.3 / 21 ms at 100 / 500 / 2,000 rows; docs/latency.md, "Ingest"). The messages are the
-- same: the same envelope, the same split under the payload limit, the same announcements.
create or replace function public.monitoring_events_broadcast()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    -- Room kept for the envelope: {"events": [], "announced": []}, the "id" realtime.send
    -- adds, and the separators between entries.
    envelope_bytes constant integer := 200;
    budget integer;
    events jsonb[] := '{}';
    announced jsonb := '[]'::jsonb;
    used integer := 0;
    row_json jsonb;
    row_bytes integer;
    too_large boolean;
begin
    select s.max_payload_kb * 1000 - envelope_bytes into budget
    from public.monitoring_broadcast_settings as s;
    budget := coalesce(budget, 256 * 1000 - envelope_bytes);

    for row_json in
        select jsonb_build_object(
            'seq', n.seq,
            'event_type', n.event_type,
            'source', n.source,
            'criticality', n.criticality,
            'occurred_at', n.occurred_at,
            'received_at', n.received_at,
            'payload', n.payload,
            'checksum', n.checksum
        )
        from new_rows as n
        order by n.seq
    loop
        row_bytes := octet_length(row_json::text) + 2;
        -- A row too large for any message is announced by seq instead, read through REST.
        too_large := row_bytes > budget;
        if too_large then
            row_bytes := octet_length((row_json -> 'seq')::text) + 2;
        end if;
        if used + row_bytes > budget then
            perform realtime.send(
                jsonb_build_object('events', to_jsonb(events), 'announced', announced),
                'events', 'monitor:events', true
            );
            events := '{}';
            announced := '[]'::jsonb;
            used := 0;
        end if;
        if too_large then
            announced := announced || (row_json -> 'seq');
        else
            events := array_append(events, row_json);
        end if;
        used := used + row_bytes;
    end loop;

    if used > 0 then
        perform realtime.send(
            jsonb_build_object('events', to_jsonb(events), 'announced', announced),
            'events', 'monitor:events', true
        );
    end if;
    return null;
end
$$;
