-- Reconciliation: the digest of every 1,024-seq chunk of monitoring_events, kept current
-- by the table's own triggers, so that the hourly reconciliation compares a few stored
-- sums instead of re-hashing the whole history (docs/reconciliation.md).
--
-- Chunk n holds seqs [n*1024 + 1, (n+1)*1024 + 1). Its digest is the one
-- monitoring_events_chunk_digests computes (20261126000100): the sum of the rows'
-- monitoring_events_row_hash. The store keeps the exact (signed) sum; readers reduce it
-- modulo 2^64. Every INSERT, UPDATE, DELETE and TRUNCATE by any role (the service role's
-- secret key included) goes through the statement-level triggers below, which append
-- what a statement changed (hashes in, old hashes out) to monitoring_events_digest_deltas;
-- only a superuser who switches triggers off (session_replication_role = replica) gets
-- past them, and that is what the rolling full pass (monitoring_events_digests_refresh) is
-- for. No API role can write either table.
--
-- Writers only ever INSERT delta rows: two transactions writing one chunk never wait for
-- each other (an upsert of one row per chunk would make the second wait for the first to
-- commit). Readers add monitoring_events_digests and the deltas up; the read RPC first
-- folds the deltas into monitoring_events_digests (compaction), so they stay few.

-- No write may slip between the backfill and the triggers (writes wait for the backfill).
lock table public.monitoring_events in share row exclusive mode;

create table if not exists public.monitoring_events_digests (
    chunk_no   bigint      primary key,
    row_count  bigint      not null default 0,
    hash_sum   numeric     not null default 0,
    changed_at timestamptz not null default now(),
    hashed_at  timestamptz
);

comment on table public.monitoring_events_digests is
    'Row count and hash sum of monitoring_events per 1,024-seq chunk, without the deltas.';

create table if not exists public.monitoring_events_digest_deltas (
    chunk_no   bigint      not null,
    row_count  bigint      not null,
    hash_sum   numeric     not null,
    written_at timestamptz not null default now()
);

create index if not exists monitoring_events_digest_deltas_chunk_idx
    on public.monitoring_events_digest_deltas (chunk_no);

comment on table public.monitoring_events_digest_deltas is
    'What each write statement changed per chunk, until folded into monitoring_events_digests.';

revoke all on table public.monitoring_events_digests
    from public, anon, authenticated, service_role;
revoke all on table public.monitoring_events_digest_deltas
    from public, anon, authenticated, service_role;
alter table public.monitoring_events_digests enable row level security;
alter table public.monitoring_events_digest_deltas enable row level security;

create or replace function public.monitoring_events_digests_apply()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    -- One insert per statement (not per row): a 100-row batch of the sink costs one
    -- aggregate over its transition table and one or two appended rows, and takes no lock
    -- another writer could wait for.
    if tg_op = 'INSERT' then
        insert into public.monitoring_events_digest_deltas (chunk_no, row_count, hash_sum)
        select (r.seq - 1) >> 10, count(*), sum(public.monitoring_events_row_hash(
            r.seq, r.event_type, r.source, r.criticality,
            r.occurred_at, r.received_at, r.payload, r.checksum))
        from new_rows as r
        group by 1;
    elsif tg_op = 'DELETE' then
        insert into public.monitoring_events_digest_deltas (chunk_no, row_count, hash_sum)
        select (r.seq - 1) >> 10, -count(*), -sum(public.monitoring_events_row_hash(
            r.seq, r.event_type, r.source, r.criticality,
            r.occurred_at, r.received_at, r.payload, r.checksum))
        from old_rows as r
        group by 1;
    elsif tg_op = 'UPDATE' then
        insert into public.monitoring_events_digest_deltas (chunk_no, row_count, hash_sum)
        select c.chunk_no, sum(c.n), sum(c.h)
        from (
            select (r.seq - 1) >> 10 as chunk_no, 1 as n, public.monitoring_events_row_hash(
                r.seq, r.event_type, r.source, r.criticality,
                r.occurred_at, r.received_at, r.payload, r.checksum)::numeric as h
            from new_rows as r
            union all
            select (r.seq - 1) >> 10, -1, -public.monitoring_events_row_hash(
                r.seq, r.event_type, r.source, r.criticality,
                r.occurred_at, r.received_at, r.payload, r.checksum)::numeric
            from old_rows as r
        ) as c
        group by 1;
    elsif tg_op = 'TRUNCATE' then
        delete from public.monitoring_events_digests;
        delete from public.monitoring_events_digest_deltas;
    end if;
    return null;
end
$$;

revoke execute on function public.monitoring_events_digests_apply()
    from public, anon, authenticated, service_role;

drop trigger if exists monitoring_events_digests_insert on public.monitoring_events;
create trigger monitoring_events_digests_insert
    after insert on public.monitoring_events
    referencing new table as new_rows
    for each statement execute function public.monitoring_events_digests_apply();

drop trigger if exists monitoring_events_digests_update on public.monitoring_events;
create trigger monitoring_events_digests_update
    after update on public.monitoring_events
    referencing old table as old_rows new table as new_rows
    for each statement execute function public.monitoring_events_digests_apply();

drop trigger if exists monitoring_events_digests_delete on public.monitoring_events;
create trigger monitoring_events_digests_delete
    after delete on public.monitoring_events
    referencing old table as old_rows
    for each statement execute function public.monitoring_events_digests_apply();

drop trigger if exists monitoring_events_digests_truncate on public.monitoring_events;
create trigger monitoring_events_digests_truncate
    after truncate on public.monitoring_events
    for each statement execute function public.monitoring_events_digests_apply();

-- Backfill: the rows already there.
delete from public.monitoring_events_digests;
delete from public.monitoring_events_digest_deltas;
insert into public.monitoring_events_digests (chunk_no, row_count, hash_sum, hashed_at)
select (e.seq - 1) >> 10, count(*), sum(public.monitoring_events_row_hash(
    e.seq, e.event_type, e.source, e.criticality,
    e.occurred_at, e.received_at, e.payload, e.checksum)), now()
from public.monitoring_events as e
group by 1;

create or replace function public.monitoring_events_digests_compact()
returns void
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    -- Fold the deltas into one row per chunk. Compactions and refreshes take this lock
    -- (writers never do); a delta committed meanwhile is simply left for the next time.
    perform pg_advisory_xact_lock(hashtextextended('monitoring_events_digests', 0));
    with moved as (
        delete from public.monitoring_events_digest_deltas
        returning chunk_no, row_count, hash_sum
    )
    insert into public.monitoring_events_digests as d (chunk_no, row_count, hash_sum)
    select m.chunk_no, sum(m.row_count), sum(m.hash_sum)
    from moved as m
    group by 1
    order by 1
    on conflict (chunk_no) do update
        set row_count = d.row_count + excluded.row_count,
            hash_sum = d.hash_sum + excluded.hash_sum,
            changed_at = now();
end
$$;

revoke execute on function public.monitoring_events_digests_compact()
    from public, anon, authenticated;

create or replace function public.monitoring_events_stored_digests(
    from_chunk bigint,
    to_chunk bigint,
    group_chunks bigint default 1
) returns table (chunk_start bigint, chunk_end bigint, row_count bigint, digest text)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    -- The stored digests of chunks [from_chunk, to_chunk), summed per group of
    -- group_chunks chunks, in the shape of monitoring_events_chunk_digests (seq bounds,
    -- count, digest modulo 2^64 as an unsigned decimal). No row is hashed here. The
    -- deltas are folded in first, and the sum reads both tables in one snapshot, so a
    -- write committed at any moment is counted exactly once.
    perform public.monitoring_events_digests_compact();
    return query
    select
        (from_chunk + ((d.chunk_no - from_chunk) / group_chunks) * group_chunks) * 1024 + 1,
        least(from_chunk + ((d.chunk_no - from_chunk) / group_chunks + 1) * group_chunks,
              to_chunk) * 1024 + 1,
        sum(d.row_count)::bigint,
        ((sum(d.hash_sum) % 18446744073709551616 + 18446744073709551616)
            % 18446744073709551616)::text
    from (
        select s.chunk_no, s.row_count, s.hash_sum from public.monitoring_events_digests as s
        where s.chunk_no >= from_chunk and s.chunk_no < to_chunk
        union all
        select x.chunk_no, x.row_count, x.hash_sum
        from public.monitoring_events_digest_deltas as x
        where x.chunk_no >= from_chunk and x.chunk_no < to_chunk
    ) as d
    where group_chunks > 0
    group by 1, 2
    order by 1;
end
$$;

comment on function public.monitoring_events_stored_digests is
    'Stored digests of monitoring_events per 1,024-seq chunk (or group of chunks).';

create or replace function public.monitoring_events_digests_refresh(
    from_chunk bigint,
    to_chunk bigint
) returns table (chunk_start bigint, chunk_end bigint, row_count bigint, digest text,
                 was_stale boolean)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
    -- Re-hash the rows of chunks [from_chunk, to_chunk) (at most 1,000) and store what
    -- they hash to: the rolling full pass, which also repairs the store after a write
    -- that got past the triggers. Anyone may call it: it can only store the truth.
    if to_chunk - from_chunk > 1000 or to_chunk < from_chunk then
        raise exception 'refresh at most 1,000 chunks per call, not %', to_chunk - from_chunk
            using errcode = '22023';
    end if;
    perform pg_advisory_xact_lock(hashtextextended('monitoring_events_digests', 0));
    -- One statement, one snapshot: the rows hashed and the deltas removed are those of
    -- the same committed writes; a write committing later leaves its delta for next time.
    return query
    with live as (
        select (e.seq - 1) >> 10 as chunk_no, count(*) as n,
               sum(public.monitoring_events_row_hash(
                   e.seq, e.event_type, e.source, e.criticality,
                   e.occurred_at, e.received_at, e.payload, e.checksum)) as h
        from public.monitoring_events as e
        where e.seq >= from_chunk * 1024 + 1 and e.seq < to_chunk * 1024 + 1
        group by 1
    ), kept as (
        select k.chunk_no, sum(k.row_count) as n, sum(k.hash_sum) as h
        from (
            select s.chunk_no, s.row_count, s.hash_sum
            from public.monitoring_events_digests as s
            where s.chunk_no >= from_chunk and s.chunk_no < to_chunk
            union all
            select x.chunk_no, x.row_count, x.hash_sum
            from public.monitoring_events_digest_deltas as x
            where x.chunk_no >= from_chunk and x.chunk_no < to_chunk
        ) as k
        group by 1
    ), wanted as (
        select c.chunk_no, coalesce(l.n, 0) as n, coalesce(l.h, 0) as h,
               coalesce(k.n, 0) <> coalesce(l.n, 0) or coalesce(k.h, 0) <> coalesce(l.h, 0)
                   as stale
        from generate_series(from_chunk, to_chunk - 1) as c(chunk_no)
        left join live as l on l.chunk_no = c.chunk_no
        left join kept as k on k.chunk_no = c.chunk_no
    ), gone as (
        delete from public.monitoring_events_digest_deltas as x
        where x.chunk_no >= from_chunk and x.chunk_no < to_chunk
    ), written as (
        insert into public.monitoring_events_digests as d
            (chunk_no, row_count, hash_sum, changed_at, hashed_at)
        select w.chunk_no, w.n, w.h, now(), now()
        from wanted as w
        where w.n <> 0 or w.h <> 0
        on conflict (chunk_no) do update
            set row_count = excluded.row_count, hash_sum = excluded.hash_sum,
                hashed_at = now(),
                changed_at = case when d.row_count <> excluded.row_count
                                    or d.hash_sum <> excluded.hash_sum
                                  then now() else d.changed_at end
    ), emptied as (
        delete from public.monitoring_events_digests as d
        using wanted as w
        where d.chunk_no = w.chunk_no and w.n = 0 and w.h = 0
    )
    select w.chunk_no * 1024 + 1, (w.chunk_no + 1) * 1024 + 1, w.n,
           ((w.h % 18446744073709551616 + 18446744073709551616) % 18446744073709551616)::text,
           w.stale
    from wanted as w
    where w.n <> 0 or w.stale
    order by 1;
end
$$;

comment on function public.monitoring_events_digests_refresh is
    'Re-hash monitoring_events chunks [from_chunk, to_chunk) and store their digests.';

revoke execute on function public.monitoring_events_stored_digests(bigint, bigint, bigint)
    from public, anon, authenticated;
grant execute on function public.monitoring_events_stored_digests(bigint, bigint, bigint)
    to service_role;
revoke execute on function public.monitoring_events_digests_refresh(bigint, bigint)
    from public, anon, authenticated;
grant execute on function public.monitoring_events_digests_refresh(bigint, bigint)
    to service_role;
