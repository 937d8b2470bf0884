-- Reconciliation RPC: count and digest of monitoring_events per seq chunk, computed inside
-- PostgreSQL so that a million rows never leave the database. The digest definition is
-- documented in docs/supabase.md; the Django side computes the identical one locally.

create or replace function public.monitoring_events_row_hash(
    seq bigint,
    event_type text,
    source text,
    criticality text,
    occurred_at timestamptz,
    received_at timestamptz,
    payload jsonb,
    checksum text
) returns bigint
language sql
stable
parallel safe
as $$
    -- Canonical row text: fields joined by '|' in this order; times as integer
    -- microseconds since the Unix epoch (exact: a double holds them to 2255), payload as
    -- jsonb's own text output. hashtextextended is the 64-bit hash hash partitioning
    -- stores on disk, so it is the same on every PostgreSQL version and platform.
    select hashtextextended(
        seq::text
        || '|' || event_type
        || '|' || source
        || '|' || criticality
        || '|' || round(date_part('epoch', occurred_at) * 1000000)::bigint::text
        || '|' || round(date_part('epoch', received_at) * 1000000)::bigint::text
        || '|' || payload::text
        || '|' || checksum,
        0
    )
$$;

comment on function public.monitoring_events_row_hash is
    'Signed 64-bit hash of the canonical text of one monitoring_events row (docs/supabase.md).';

create or replace function public.monitoring_events_chunk_digests(
    from_seq bigint,
    to_seq bigint,
    chunk_size bigint default 10000
) returns table (chunk_start bigint, chunk_end bigint, row_count bigint, digest text)
language sql
stable
security invoker
set search_path = ''
as $$
    -- Chunks are [from_seq + k*chunk_size, from_seq + (k+1)*chunk_size) clipped to
    -- [from_seq, to_seq); only non-empty ones are returned. The recursion jumps from one
    -- non-empty chunk to the next with an index probe, so sparse ranges cost nothing
    -- and every chunk is one index range scan (no sort, no hash of a million groups).
    with recursive chunk(start_seq) as (
        select from_seq + ((first_row.seq - from_seq) / chunk_size) * chunk_size
        from (
            select min(e.seq) as seq
            from public.monitoring_events as e
            where e.seq >= from_seq and e.seq < to_seq
        ) as first_row
        where first_row.seq is not null
        union all
        select from_seq + ((next_row.seq - from_seq) / chunk_size) * chunk_size
        from chunk as c
        cross join lateral (
            select min(e.seq) as seq
            from public.monitoring_events as e
            where e.seq >= c.start_seq + chunk_size and e.seq < to_seq
        ) as next_row
        where next_row.seq is not null
    )
    select
        c.start_seq,
        least(c.start_seq + chunk_size, to_seq),
        agg.row_count,
        agg.digest
    from chunk as c
    cross join lateral (
        select
            count(*) as row_count,
            -- sum of the rows' hashes modulo 2^64, as an unsigned decimal: chunk
            -- digests add up (mod 2^64) to the digest of their union.
            ((coalesce(sum(public.monitoring_events_row_hash(
                e.seq, e.event_type, e.source, e.criticality,
                e.occurred_at, e.received_at, e.payload, e.checksum
            )), 0) % 18446744073709551616 + 18446744073709551616)
                % 18446744073709551616)::text as digest
        from public.monitoring_events as e
        where e.seq >= c.start_seq and e.seq < least(c.start_seq + chunk_size, to_seq)
    ) as agg
    where chunk_size > 0
    order by c.start_seq
$$;

comment on function public.monitoring_events_chunk_digests is
    'Row count and digest of monitoring_events per seq chunk of [from_seq, to_seq).';

-- Supabase grants EXECUTE on new functions to anon and authenticated (and PostgreSQL to
-- PUBLIC); reconciliation runs with the service_role key only.
revoke execute on function public.monitoring_events_chunk_digests(bigint, bigint, bigint)
    from public, anon, authenticated;
grant execute on function public.monitoring_events_chunk_digests(bigint, bigint, bigint)
    to service_role;
revoke execute on function public.monitoring_events_row_hash(
    bigint, text, text, text, timestamptz, timestamptz, jsonb, text
) from public, anon, authenticated;
grant execute on function public.monitoring_events_row_hash(
    bigint, text, text, text, timestamptz, timestamptz, jsonb, text
) to service_role;
