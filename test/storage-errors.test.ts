import t from 'tap'
import { MemoryStorage, type IdempotencyStorage } from '../index'
import { createApp } from './helpers/app'

const key = { 'idempotency-key': 'down-1' }

/** Returns a memory storage whose `failing` methods reject, as a Redis that is down does. */
function brokenStorage (failing: Array<keyof IdempotencyStorage>): IdempotencyStorage {
  const memory = new MemoryStorage()
  const storage = {
    claim: memory.claim.bind(memory),
    get: memory.get.bind(memory),
    complete: memory.complete.bind(memory),
    renew: memory.renew.bind(memory),
    release: memory.release.bind(memory)
  }
  for (const method of failing) {
    storage[method] = async () => { throw new Error('connect ECONNREFUSED 127.0.0.1:6379') }
  }
  return storage
}

function captureLogs () {
  const lines: Array<{ level: number, msg: string, err?: { message: string } }> = []
  const stream = { write: (line: string) => { lines.push(JSON.parse(line)) } }
  return { lines, logger: { level: 'debug', stream } }
}

t.test('storage down gets 503', async (t) => {
  const logs = captureLogs()
  const app = await createApp(t, { storage: brokenStorage(['claim', 'get']) }, { logger: logs.logger })
  let runs = 0
  app.post('/payments', async () => ({ run: ++runs }))
  app.post('/webhooks', { config: { idempotency: 'exempt' } }, async () => ({ ok: true }))

  const response = await app.inject({ method: 'POST', url: '/payments', headers: key })
  const exempt = await app.inject({ method: 'POST', url: '/webhooks', headers: key })

  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'FST_IDEMPOTENCY_STORAGE_UNAVAILABLE')
  t.notMatch(response.body, /ECONNREFUSED/)
  t.equal(runs, 0)
  t.equal(exempt.statusCode, 200)
  const errors = logs.lines.filter((line) => line.level === 50)
  t.equal(errors.length, 1)
  t.match(errors[0]?.err?.message, /ECONNREFUSED/)
})

t.test('timed out claim is released', async (t) => {
  const memory = new MemoryStorage()
  const storage = brokenStorage([])
  // The claim lands in storage, but the client gives up on it, as an
  // ioredis commandTimeout does while Redis is paused.
  storage.claim = async (key, options) => {
    await memory.claim(key, options)
    throw new Error('Command timed out')
  }
  storage.release = memory.release.bind(memory)
  storage.get = memory.get.bind(memory)
  const app = await createApp(t, { storage, encoder: (request, key) => key })
  app.post('/payments', async () => ({ ok: true }))

  const response = await app.inject({ method: 'POST', url: '/payments', headers: key })
  await new Promise((resolve) => setImmediate(resolve))

  t.equal(response.statusCode, 503)
  t.equal(await memory.get('down-1'), null)
})

t.test('malformed claim result gets 503', async (t) => {
  const storage = brokenStorage([])
  storage.claim = async () => undefined as never
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/payments', async () => ({ run: ++runs }))

  const response = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.equal(response.statusCode, 503)
  t.equal(response.json().code, 'FST_IDEMPOTENCY_STORAGE_UNAVAILABLE')
  t.equal(runs, 0)
})

t.test('storage down without lock gets 503', async (t) => {
  const app = await createApp(t, { storage: brokenStorage(['get']), lock: false })
  let runs = 0
  app.post('/payments', async () => ({ run: ++runs }))

  const response = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.equal(response.statusCode, 503)
  t.equal(runs, 0)
})

t.test('failed store still answers', async (t) => {
  const logs = captureLogs()
  const app = await createApp(t, { storage: brokenStorage(['complete']) }, { logger: logs.logger })
  let runs = 0
  app.post('/payments', async () => ({ run: ++runs }))

  const response = await app.inject({ method: 'POST', url: '/payments', headers: key })
  const retry = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.equal(response.statusCode, 200)
  t.same(response.json(), { run: 1 })
  const errors = logs.lines.filter((line) => line.level === 50)
  t.match(errors[0]?.msg, /storage failed or timed out after the handler ran/)
  // The claim stays until its lease ends, so a quick retry cannot run twice.
  t.equal(retry.statusCode, 423)
  t.equal(runs, 1)
})

t.test('failed renewal is logged', async (t) => {
  const logs = captureLogs()
  const app = await createApp(t, { storage: brokenStorage(['renew']), lockTtl: 30 }, { logger: logs.logger })
  app.post('/payments', async () => {
    await new Promise((resolve) => setTimeout(resolve, 60))
    return { ok: true }
  })

  const response = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.equal(response.statusCode, 200)
  t.ok(logs.lines.some((line) => line.level === 40 && /renewal failed/.test(line.msg)))
})

t.test('lost claim is not overwritten', async (t) => {
  const logs = captureLogs()
  const storage = new MemoryStorage()
  // A renewal that finds its claim gone, as after a long network partition.
  storage.renew = async () => false
  const app = await createApp(t, { storage, lockTtl: 30, lockTimeout: 0 }, { logger: logs.logger })
  let runs = 0
  app.post('/payments', async () => {
    const run = ++runs
    await new Promise((resolve) => setTimeout(resolve, run === 1 ? 120 : 10))
    return { run }
  })

  const original = app.inject({ method: 'POST', url: '/payments', headers: key })
  await new Promise((resolve) => setTimeout(resolve, 60))
  const second = await app.inject({ method: 'POST', url: '/payments', headers: key })
  const first = await original
  const retry = await app.inject({ method: 'POST', url: '/payments', headers: key })

  t.same(second.json(), { run: 2 })
  t.same(first.json(), { run: 1 })
  t.same(retry.json(), { run: 2 })
  const warnings = logs.lines.filter((line) => line.level === 40).map((line) => line.msg)
  t.ok(warnings.includes('idempotency claim was lost before the handler finished'))
  t.ok(warnings.includes('idempotency response not stored: the claim was lost'))
})

t.test('logs stay quiet at info', async (t) => {
  const logs = captureLogs()
  const app = await createApp(t, {}, { logger: { ...logs.logger, level: 'info' } })
  app.post('/payments', async () => ({ ok: true }))

  await app.inject({ method: 'POST', url: '/payments', headers: key })
  await app.inject({ method: 'POST', url: '/payments', headers: key })

  const pluginLines = logs.lines.filter((line) => /idempotency/.test(line.msg))
  t.same(pluginLines, [])
})

t.test('debug logs claim, replay, release', async (t) => {
  const logs = captureLogs()
  const app = await createApp(t, {}, { logger: logs.logger })
  let runs = 0
  app.post('/payments', async (request, reply) => reply.code(++runs === 1 ? 500 : 200).send({}))

  await app.inject({ method: 'POST', url: '/payments', headers: key })
  await app.inject({ method: 'POST', url: '/payments', headers: key })
  await app.inject({ method: 'POST', url: '/payments', headers: key })

  const messages = logs.lines.filter((line) => line.level === 20).map((line) => line.msg)
  t.same(messages, [
    'idempotency key claimed',
    'idempotency key released',
    'idempotency key claimed',
    'idempotency response stored',
    'idempotency key replayed'
  ])
})
