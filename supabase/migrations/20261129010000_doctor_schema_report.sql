-- Monitor: what `manage.py supabase_doctor` asks a project about its schema. Realtime and
-- PostgREST expose no catalog, so this one function, callable by the service role only,
-- reports whether the objects Monitor relies on are in place (docs/supabase.md, "The
-- doctor"). It reads the catalog and changes nothing.
create or replace function public.monitor_doctor_schema_report()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select jsonb_build_object(
        'table', to_regclass('public.monitoring_events') is not null,
        'checksum_constraint', exists (
            select 1 from pg_catalog.pg_constraint as c
            where c.conrelid = to_regclass('public.monitoring_events')
              and c.contype = 'c'
              and pg_catalog.pg_get_constraintdef(c.oid) like '%checksum%'
        ),
        'rls_monitoring_events', coalesce((
            select c.relrowsecurity from pg_catalog.pg_class as c
            where c.oid = to_regclass('public.monitoring_events')
        ), false),
        'rls_realtime_messages', coalesce((
            select c.relrowsecurity from pg_catalog.pg_class as c
            where c.oid = to_regclass('realtime.messages')
        ), false),
        'receive_policy', exists (
            select 1 from pg_catalog.pg_policies as p
            where p.schemaname = 'realtime' and p.tablename = 'messages'
              and p.policyname = 'monitor_topics_authenticated_receive'
        ),
        'send_guard_policy', exists (
            select 1 from pg_catalog.pg_policies as p
            where p.schemaname = 'realtime' and p.tablename = 'messages'
              and p.policyname = 'monitor_topics_server_only_send'
        ),
        'trigger', exists (
            select 1 from pg_catalog.pg_trigger as t
            where t.tgrelid = to_regclass('public.monitoring_events')
              and t.tgname = 'monitoring_events_broadcast'
              and t.tgenabled <> 'D'
        ),
        'broadcast_payload_kb', (
            select s.max_payload_kb from public.monitoring_broadcast_settings as s limit 1
        )
    )
$$;

comment on function public.monitor_doctor_schema_report() is
    'For manage.py supabase_doctor: which of Monitor''s tables, policies and triggers exist.';

revoke all on function public.monitor_doctor_schema_report() from public, anon, authenticated;
grant execute on function public.monitor_doctor_schema_report() to service_role;
