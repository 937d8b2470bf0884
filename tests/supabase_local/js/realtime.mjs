// Drives supabase_local's Realtime with the official @supabase/supabase-js client.
//
// usage: node realtime.mjs URL KEY VSN TOPIC
//   VSN is "1.0.0" or "2.0.0" (supabase-js's default); "default" leaves it unset.
// Prints one JSON object per line on stdout: {"type": "vsn"|"status"|"system"|"change"|
// "broadcast"|"presence"|"ack"|"heartbeat"|"error", ...}. Reads commands from stdin, one per line:
//   broadcast EVENT JSON   push a broadcast on the channel and print its ack
//   http EVENT JSON        send a broadcast through the REST endpoint (httpSend)
//   track JSON             track presence (key "js") and print the ack
//   quit                   leave the channel and exit
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import readline from 'node:readline'

const [url, key, vsn, topic] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const realtime = {
  transport: WebSocket,
  heartbeatIntervalMs: 1000,
  heartbeatCallback: (status) => { if (status !== 'sent') out({ type: 'heartbeat', status }) },
}
if (vsn && vsn !== 'default') realtime.vsn = vsn
const supabase = createClient(url, key, {
  realtime,
  auth: { persistSession: false, autoRefreshToken: false },
})
out({ type: 'vsn', vsn: supabase.realtime.vsn ?? null })

const channel = supabase
  .channel(topic, { config: { broadcast: { self: true, ack: true }, presence: { key: 'js' } } })
  .on('postgres_changes', { event: '*', schema: 'public', table: 'monitoring_events' }, (p) =>
    out({ type: 'change', eventType: p.eventType, table: p.table, new: p.new, old: p.old,
          commit_timestamp: p.commit_timestamp, errors: p.errors }),
  )
  .on('broadcast', { event: '*' }, (p) => out({ type: 'broadcast', event: p.event, payload: p.payload }))
  .on('presence', { event: 'sync' }, () => out({ type: 'presence', state: channel.presenceState() }))
  .on('system', {}, (p) => out({ type: 'system', status: p.status, message: p.message,
                                 extension: p.extension }))
  .subscribe((status, err) => out({ type: 'status', status, error: err ? String(err) : null }))

const rl = readline.createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  const [cmd, event, ...rest] = line.trim().split(' ')
  try {
    if (cmd === 'broadcast') {
      const res = await channel.send({ type: 'broadcast', event, payload: JSON.parse(rest.join(' ')) })
      out({ type: 'ack', result: res })
    } else if (cmd === 'track') {
      out({ type: 'ack', result: await channel.track(JSON.parse([event, ...rest].join(' '))) })
    } else if (cmd === 'http') {
      const res = await channel.httpSend(event, JSON.parse(rest.join(' ')))
      out({ type: 'ack', result: res })
    } else if (cmd === 'quit') {
      await supabase.removeAllChannels()
      out({ type: 'bye' })
      process.exit(0)
    }
  } catch (e) {
    out({ type: 'error', error: String(e) })
  }
})
setTimeout(() => { out({ type: 'error', error: 'script timeout' }); process.exit(2) }, 60000)
