// A private channel through the official @supabase/supabase-js client: a signed-in user
// on the publishable key joins their own topic asking for broadcast replay, and tries a
// topic that is not theirs.
//
// usage: node private.mjs URL PUBLISHABLE_KEY USER_TOKEN VSN OWN_TOPIC OTHER_TOPIC SINCE_MS
// Prints JSON lines: {"type": "status", "topic", "status", "error"} and
// {"type": "broadcast", "event", "payload", "meta"}. Exits on "quit" on stdin.
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'
import readline from 'node:readline'

const [url, key, token, vsn, ownTopic, otherTopic, since] = process.argv.slice(2)
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const realtime = { transport: WebSocket }
if (vsn !== 'default') realtime.vsn = vsn
const supabase = createClient(url, key, {
  realtime,
  auth: { persistSession: false, autoRefreshToken: false },
})
await supabase.realtime.setAuth(token)

const join = (topic, broadcast) =>
  supabase
    .channel(topic, { config: { private: true, broadcast } })
    .on('broadcast', { event: '*' }, (p) =>
      out({ type: 'broadcast', event: p.event, payload: p.payload, meta: p.meta ?? null }))
    .subscribe((status, err) => out({ type: 'status', topic, status, error: err ? String(err) : null }))

join(ownTopic, { replay: { since: Number(since), limit: 10 } })
join(otherTopic, {})

readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line.trim() === 'quit') {
    await supabase.removeAllChannels()
    process.exit(0)
  }
})
