// REST through the official @supabase/supabase-js client, as an application uses it.
//
// usage: node rest.mjs URL ANON_KEY SERVICE_KEY USER_TOKEN FORGED_KEY SEQ
// Prints one JSON line per step: {"step", "status", "data", "error", "count"}, where
// error is what supabase-js surfaces ({code, message, details, hint} or null).
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const [url, anonKey, serviceKey, userToken, forgedKey, seqText] = process.argv.slice(2)
const seq = Number(seqText)
// Node 20 has no native WebSocket: createClient builds a realtime client even for REST.
const opts = {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: WebSocket },
}
const service = createClient(url, serviceKey, opts)
const anon = createClient(url, anonKey, opts)
const user = createClient(url, anonKey, {
  ...opts, global: { headers: { Authorization: `Bearer ${userToken}` } },
})
const forged = createClient(url, forgedKey, opts)

const row = (n) => ({
  seq: n, event_type: 'js.probe', source: 'node', criticality: 'system',
  occurred_at: '2026-01-01T00:00:00+00:00', received_at: '2026-01-01T00:00:01+00:00',
  payload: { from: 'supabase-js', n }, checksum: n.toString(16).padStart(64, '0'),
})
const report = (step, { status, data, error, count }) =>
  process.stdout.write(JSON.stringify({ step, status, data: data ?? null, count: count ?? null,
    error: error ? { code: error.code ?? null, message: error.message ?? null,
                     details: error.details ?? null, hint: error.hint ?? null } : null }) + '\n')

report('service insert', await service.from('monitoring_events').insert([row(seq), row(seq + 1)]).select('seq'))
report('service select', await service.from('monitoring_events').select('seq, payload', { count: 'exact' })
  .gte('seq', seq).lte('seq', seq + 1).order('seq', { ascending: false }))
report('duplicate insert', await service.from('monitoring_events').insert(row(seq)))
report('anon select', await anon.from('monitoring_events').select('seq').eq('seq', seq))
report('anon insert', await anon.from('monitoring_events').insert(row(seq + 2)))
report('user select', await user.from('monitoring_events').select('seq').eq('seq', seq).single())
report('user insert', await user.from('monitoring_events').insert(row(seq + 3)))
report('unknown table', await service.from('no_such_table').select('*'))
report('unknown column', await service.from('monitoring_events').select('nope').eq('seq', seq))
report('forged key', await forged.from('monitoring_events').select('seq').eq('seq', seq))
report('service delete', await service.from('monitoring_events').delete().gte('seq', seq).lte('seq', seq + 3))
