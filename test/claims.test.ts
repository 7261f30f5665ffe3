import http from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createApp, listen } from './helpers/app'
import { eachStorage } from './helpers/storages'

const key = { 'idempotency-key': 'claim-1' }

eachStorage(t, 'disconnect keeps the claim', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  let finished!: () => void
  const handlerFinished = new Promise<void>((resolve) => { finished = resolve })
  app.post('/payments', async () => {
    runs++
    await sleep(200)
    finished()
    return { charged: runs }
  })
  const base = new URL(await listen(app))

  const request = http.request({
    host: base.hostname,
    port: base.port,
    method: 'POST',
    path: '/payments',
    headers: key
  })
  request.on('error', () => {})
  request.end()
  await sleep(50)
  request.destroy()

  await handlerFinished
  await sleep(20)
  const retry = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.equal(runs, 1)
  t.equal(retry.statusCode, 409)
  t.same(retry.json(), { charged: 1 })
})

eachStorage(t, 'claim of a dead owner expires', async (t, storage) => {
  const encoder = (request: unknown, key: string) => key
  const app = await createApp(t, { storage, encoder, fingerprint: false, lockTimeout: 0, lockTtl: 100 })
  let runs = 0
  app.post('/payments', async () => ({ run: ++runs }))

  // Claim the key as a process that then dies would: it never renews.
  const claim = await storage.claim('claim-1', {
    token: 'dead-process',
    fingerprint: '',
    lease: 100,
    takeover: false
  })
  t.equal(claim.claimed, true)

  const blocked = await app.inject({ method: 'POST', url: '/payments', headers: key })
  await sleep(150)
  const freed = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.equal(blocked.statusCode, 423)
  t.equal(freed.statusCode, 200)
  t.equal(runs, 1)
})

eachStorage(t, 'slow handler keeps its key', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 0, lockTtl: 300 })
  let runs = 0
  app.post('/payments', async () => {
    runs++
    await sleep(1300)
    return { run: runs }
  })
  const base = await listen(app)
  const send = () => fetch(`${base}/payments`, { method: 'POST', headers: key })

  const original = send()
  const duplicates = []
  // Each duplicate arrives after the first lease of 300 ms would have ended.
  for (let i = 0; i < 4; i++) {
    await sleep(250)
    duplicates.push((await send()).status)
  }

  t.equal((await original).status, 200)
  t.same(duplicates, [423, 423, 423, 423])
  t.equal(runs, 1)
})

eachStorage(t, 'hijacked reply releases its key', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/raw', async (request, reply) => {
    runs++
    reply.hijack()
    reply.raw.end('raw')
  })

  const first = await app.inject({ method: 'POST', url: '/raw', headers: key })
  await sleep(20)
  const second = await app.inject({ method: 'POST', url: '/raw', headers: key })

  t.equal(first.body, 'raw')
  t.equal(second.body, 'raw')
  t.equal(runs, 2)
})

/** Sends a POST and destroys the connection after `delay` ms. */
async function postAndDisconnect (base: URL, path: string, delay: number) {
  const request = http.request({
    host: base.hostname,
    port: base.port,
    method: 'POST',
    path,
    headers: key
  })
  request.on('error', () => {})
  request.end()
  await sleep(delay)
  request.destroy()
}

eachStorage(t, 'hijack after disconnect frees key', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 0, lockTtl: 300 })
  let runs = 0
  app.post('/raw', async (request, reply) => {
    runs++
    await sleep(150)
    reply.hijack()
    reply.raw.end('raw')
  })
  const base = new URL(await listen(app))

  await postAndDisconnect(base, '/raw', 50)
  // The handler ended its hijacked reply at 150 ms, and the next renewal
  // tick (every 100 ms) releases the key. The lease alone would last until
  // 450 ms.
  await sleep(300)
  const retry = await fetch(`${base.origin}/raw`, { method: 'POST', headers: key })

  t.equal(retry.status, 200)
  t.equal(await retry.text(), 'raw')
  t.equal(runs, 2)
})

eachStorage(t, 'running hijack keeps key a lease', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 0, lockTtl: 300 })
  let runs = 0
  app.post('/raw', async (request, reply) => {
    runs++
    reply.hijack()
    reply.raw.writeHead(200)
    reply.raw.write('started\n')
    await sleep(1500)
    reply.raw.end('done')
  })
  const base = new URL(await listen(app))

  await postAndDisconnect(base, '/raw', 50)
  const during = await fetch(`${base.origin}/raw`, { method: 'POST', headers: key })
  // Renewals stop when the hijacked reply loses its connection, so the
  // claim ends within one lease even though the handler still runs.
  await sleep(600)
  const after = await fetch(`${base.origin}/raw`, { method: 'POST', headers: key })

  t.equal(during.status, 423)
  t.equal(after.status, 200)
  t.equal(await after.text(), 'started\ndone')
  t.equal(runs, 2)
})
