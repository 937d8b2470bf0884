-- Reconciliation drill-down: the digest of each row of a seq range, so a chunk whose
-- digest differs can be narrowed to its rows without fetching their content. A row's
-- digest is its row hash as an unsigned decimal; a chunk's digest is the sum of its
-- rows' digests modulo 2^64 (docs/supabase.md).

create or replace function public.monitoring_events_row_digests(from_seq bigint, to_seq bigint)
returns table (seq bigint, digest text)
language sql
stable
security invoker
set search_path = ''
as $$
    select
        e.seq,
        ((public.monitoring_events_row_hash(
            e.seq, e.event_type, e.source, e.criticality,
            e.occurred_at, e.received_at, e.payload, e.checksum
        )::numeric + 18446744073709551616) % 18446744073709551616)::text
    from public.monitoring_events as e
    where e.seq >= from_seq and e.seq < to_seq
    order by e.seq
$$;

comment on function public.monitoring_events_row_digests is
    'Digest of every monitoring_events row with seq in [from_seq, to_seq), in seq order.';

revoke execute on function public.monitoring_events_row_digests(bigint, bigint)
    from public, anon, authenticated;
grant execute on function public.monitoring_events_row_digests(bigint, bigint)
    to service_role;
