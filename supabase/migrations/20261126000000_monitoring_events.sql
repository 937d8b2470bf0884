-- Monitor: the table the product mirrors its event log into, with its RLS policies and
-- its place in the Realtime publication. Apply with the Supabase CLI (docs/supabase.md).

create table if not exists public.monitoring_events (
    seq          bigint      primary key,
    event_type   text        not null,
    source       text        not null,
    criticality  text        not null
        check (criticality in ('critical', 'performance', 'user_activity', 'system', 'debug')),
    occurred_at  timestamptz not null,
    received_at  timestamptz not null,
    payload      jsonb       not null default '{}'::jsonb,
    checksum     text        not null check (checksum ~ '^[0-9a-f]{64}$'),
    published_at timestamptz not null default now()
);

comment on table public.monitoring_events is
    'Mirror of the Monitor event log, keyed by the global seq; written by service_role only.';

create index if not exists monitoring_events_received_at_idx
    on public.monitoring_events (received_at);
create index if not exists monitoring_events_occurred_at_idx
    on public.monitoring_events (occurred_at);

-- Supabase grants ALL on new public tables to anon, authenticated and service_role by
-- default privileges; start from nothing and grant exactly what each role needs.
revoke all on table public.monitoring_events from public, anon, authenticated, service_role;
grant select on table public.monitoring_events to authenticated;
grant select, insert, update, delete on table public.monitoring_events to service_role;

alter table public.monitoring_events enable row level security;

-- service_role bypasses RLS on Supabase; the policy also states the intent and keeps the
-- table writable by it should BYPASSRLS ever be withdrawn.
drop policy if exists monitoring_events_service_role_all on public.monitoring_events;
create policy monitoring_events_service_role_all on public.monitoring_events
    for all to service_role using (true) with check (true);

drop policy if exists monitoring_events_authenticated_select on public.monitoring_events;
create policy monitoring_events_authenticated_select on public.monitoring_events
    for select to authenticated using (true);

-- Realtime postgres_changes reads the publication supabase_realtime, which every Supabase
-- project has; add the table once (re-running this file is harmless).
do $$
begin
    if not exists (select 1 from pg_publication where pubname = 'supabase_realtime') then
        create publication supabase_realtime;
    end if;
    if not exists (
        select 1 from pg_publication_tables
        where pubname = 'supabase_realtime'
          and schemaname = 'public'
          and tablename = 'monitoring_events'
    ) then
        alter publication supabase_realtime add table public.monitoring_events;
    end if;
end
$$;
