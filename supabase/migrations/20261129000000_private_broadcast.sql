-- Monitor: Broadcast from the database on private topics (docs/supabase.md, "Private
-- broadcast"). Dashboards no longer follow postgres_changes: every INSERT statement on
-- monitoring_events sends its rows on the private topic 'monitor:events', packed into as
-- few messages as fit under the plan's broadcast payload limit. Rollout control messages
-- go on the private topic 'monitor:control'. Signed-in users may receive both topics;
-- nobody but the service role (which bypasses RLS) may send on either.

-- The plan's broadcast payload limit, one row. The free plan's 256 KB is the default; a
-- project on Pro or Team (3,000 KB) may raise it:
--   update public.monitoring_broadcast_settings set max_payload_kb = 3000;
-- Realtime measures kB as 1,000 bytes.
create table if not exists public.monitoring_broadcast_settings (
    id             boolean primary key default true check (id),
    max_payload_kb integer not null default 256 check (max_payload_kb between 4 and 3000)
);

comment on table public.monitoring_broadcast_settings is
    'One row: the Realtime broadcast payload limit (kB) the monitoring_events trigger packs under.';

insert into public.monitoring_broadcast_settings (id) values (true) on conflict (id) do nothing;

revoke all on table public.monitoring_broadcast_settings from public, anon, authenticated, service_role;
grant select, update on table public.monitoring_broadcast_settings to service_role;
alter table public.monitoring_broadcast_settings enable row level security;
drop policy if exists monitoring_broadcast_settings_service_role
    on public.monitoring_broadcast_settings;
create policy monitoring_broadcast_settings_service_role on public.monitoring_broadcast_settings
    for all to service_role using (true) with check (true);

-- Sends the rows one INSERT statement wrote. With INSERT ... ON CONFLICT DO NOTHING the
-- transition table holds only the rows actually inserted, so a retried batch re-sends
-- nothing. Each message is {"events": [row, ...], "announced": [seq, ...]}: an event
-- whose row alone would not fit is announced by seq and the page reads it through REST.
-- Sizes are measured on jsonb's text output, which has a space after every ':' and ','
-- and so is never smaller than the compact JSON Realtime measures: a safe upper bound.
-- SECURITY DEFINER, as Supabase documents for broadcast triggers: the send does not
-- depend on the writer's own rights on realtime.messages. realtime.send never raises
-- (a failure is a WARNING), so a broadcast problem never fails the insert.
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
    events jsonb := '[]'::jsonb;
    announced jsonb := '[]'::jsonb;
    used integer := 0;
    row_json jsonb;
    row_bytes integer;
    seq_bytes integer;
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
        if row_bytes > budget then
            -- Too large for any message: announce it instead.
            seq_bytes := octet_length((row_json -> 'seq')::text) + 2;
            if used + seq_bytes > budget then
                perform realtime.send(
                    jsonb_build_object('events', events, 'announced', announced),
                    'events', 'monitor:events', true
                );
                events := '[]'::jsonb;
                announced := '[]'::jsonb;
                used := 0;
            end if;
            announced := announced || (row_json -> 'seq');
            used := used + seq_bytes;
        else
            if used + row_bytes > budget then
                perform realtime.send(
                    jsonb_build_object('events', events, 'announced', announced),
                    'events', 'monitor:events', true
                );
                events := '[]'::jsonb;
                announced := '[]'::jsonb;
                used := 0;
            end if;
            events := events || jsonb_build_array(row_json);
            used := used + row_bytes;
        end if;
    end loop;

    if used > 0 then
        perform realtime.send(
            jsonb_build_object('events', events, 'announced', announced),
            'events', 'monitor:events', true
        );
    end if;
    return null;
end
$$;

comment on function public.monitoring_events_broadcast() is
    'Statement trigger: broadcasts the inserted monitoring_events rows on private topic monitor:events.';

revoke all on function public.monitoring_events_broadcast() from public, anon, authenticated;

drop trigger if exists monitoring_events_broadcast on public.monitoring_events;
create trigger monitoring_events_broadcast
    after insert on public.monitoring_events
    referencing new table as new_rows
    for each statement
    execute function public.monitoring_events_broadcast();

-- Realtime Authorization: SELECT on realtime.messages is "may receive", INSERT "may send".
drop policy if exists monitor_topics_authenticated_receive on realtime.messages;
create policy monitor_topics_authenticated_receive on realtime.messages
    for select to authenticated
    using (
        realtime.topic() in ('monitor:events', 'monitor:control')
        and extension = 'broadcast'
    );

-- No INSERT policy grants anyone a send on these topics. Permissive policies are OR-ed, so
-- one added later for some other topic (say "authenticated may send on user:<sub>") could
-- let a user send here too; this restrictive one is AND-ed with all of them and keeps the
-- two topics the service role's alone (service_role bypasses RLS and is not bound by it;
-- the trigger's SECURITY DEFINER send runs as the migration's owner, not as these roles).
-- It checks both the row's topic and the topic being authorised.
drop policy if exists monitor_topics_server_only_send on realtime.messages;
create policy monitor_topics_server_only_send on realtime.messages
    as restrictive
    for insert to anon, authenticated
    with check (
        topic not in ('monitor:events', 'monitor:control')
        and coalesce(realtime.topic(), '') not in ('monitor:events', 'monitor:control')
    );
