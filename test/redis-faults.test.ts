import { setTimeout as sleep } from 'node:timers/promises'
import fastifyRedis from '@fastify/redis'
import Fastify from 'fastify'
import { Redis, type RedisOptions } from 'ioredis'
import t, { type Test } from 'tap'
import idempotency from '../index'
import { startRedisServer, type RedisServer } from './helpers/redis'

// The tests wait for Redis to come back, and one waits for a lease to end.
t.setTimeout(180_000)

/*
 * The ioredis settings that turn a Redis outage into fast 503s. With the
 * ioredis 6.1 defaults, a command sent while disconnected waits in the
 * offline queue through 20 reconnect attempts, which took 73 s against a
 * stopped local server. A command to a server that accepts it but stalls
 * waits as long as the stall, since ioredis sets no command timeout.
 */
const failFastOptions: RedisOptions = {
  // Reject commands at once while disconnected, in place of queueing them.
  enableOfflineQueue: false,
  // Reject a command that has had no reply for this many ms.
  commandTimeout: 500
}

// A 503 from a failed storage call takes a few ms, or commandTimeout when
// Redis stalls. The limit leaves room for a busy machine, and is still far
// below the 73 s of the default settings.
const fastResponseLimit = 3000

interface LogLine {
  level: number
  msg: string
  err?: { message: string }
}

interface PostResult {
  status: number
  replayed: string | null
  body: string
  code: string | undefined
  /** Time in ms from sending the request to reading its body. */
  elapsed: number
}

async function post (base: string, key: string, path = '/payments'): Promise<PostResult> {
  const started = Date.now()
  const response = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"amount":100}'
  })
  const body = await response.text()
  let code: string | undefined
  if (response.status >= 400) {
    code = JSON.parse(body).code
  }
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    body,
    code,
    elapsed: Date.now() - started
  }
}

/**
 * Sends `key` every 100 ms while the response has status `status`, for at
 * most `timeout` ms. Returns the first other response, or the last one.
 */
async function postWhile (base: string, key: string, status: number, timeout: number): Promise<PostResult & { tries: number }> {
  const deadline = Date.now() + timeout
  let tries = 1
  let response = await post(base, key)
  while (response.status === status && Date.now() < deadline) {
    await sleep(100)
    tries++
    response = await post(base, key)
  }
  return { ...response, tries }
}

async function waitFor (what: string, timeout: number, check: () => boolean): Promise<void> {
  const deadline = Date.now() + timeout
  while (!check()) {
    if (Date.now() > deadline) {
      throw new Error(`Timed out after ${timeout} ms waiting until ${what}`)
    }
    await sleep(10)
  }
}

interface AppOptions {
  client: RedisOptions
  lockTimeout?: number
  lockTtl?: number
  /** Runs inside the payment handler, with the number of this run. */
  duringRun?: (run: number, client: Redis) => Promise<void>
}

interface FaultApp {
  url: string
  client: Redis
  logs: LogLine[]
  runs (): number
}

/** Starts an app on Redis through @fastify/redis, listening on 127.0.0.1. */
async function startApp (t: Test, server: RedisServer, options: AppOptions): Promise<FaultApp> {
  const logs: LogLine[] = []
  const stream = { write: (line: string) => { logs.push(JSON.parse(line)) } }
  const app = Fastify({ logger: { level: 'warn', stream } })

  const client = new Redis(server.url, options.client)
  // ioredis emits an error for every failed reconnect, and prints each one
  // as unhandled when no listener is attached.
  client.on('error', (err) => app.log.warn({ err }, 'Redis connection error'))
  // The test owns the client, because quit() rejects while Redis is down
  // when the offline queue is off, and disconnect() does not.
  t.teardown(() => client.disconnect())
  await app.register(fastifyRedis, { client })
  await app.register(idempotency, {
    storage: 'redis',
    lockTimeout: options.lockTimeout,
    lockTtl: options.lockTtl
  })

  let runs = 0
  app.post('/payments', async () => {
    const run = ++runs
    await options.duringRun?.(run, client)
    return { run }
  })
  app.post('/webhooks', { config: { idempotency: 'exempt' } }, async () => ({ ok: true }))

  t.teardown(() => app.close())
  const url = await app.listen({ host: '127.0.0.1', port: 0 })
  return { url, client, logs, runs: () => runs }
}

function errorLines (logs: LogLine[]): LogLine[] {
  return logs.filter((line) => line.level >= 50)
}

async function connectAdmin (t: Test, server: RedisServer): Promise<Redis> {
  const admin = new Redis(server.url)
  t.teardown(() => admin.disconnect())
  return admin
}

t.test('stopped Redis gets fast 503s', async (t) => {
  const server = await startRedisServer(t)
  if (server === null) {
    return
  }
  const app = await startApp(t, server, { client: failFastOptions })
  const before = await post(app.url, 'before-stop')
  t.equal(before.status, 200)

  await server.stop()
  const outage = await Promise.all(['down-1', 'down-2', 'down-3'].map((key) => post(app.url, key)))
  for (const response of outage) {
    t.equal(response.status, 503)
    t.equal(response.code, 'FST_IDEMPOTENCY_STORAGE_UNAVAILABLE')
    t.ok(response.elapsed < fastResponseLimit, `503 took ${response.elapsed} ms`)
  }
  t.equal(app.runs(), 1)
  const exempt = await post(app.url, 'down-1', '/webhooks')
  t.equal(exempt.status, 200)

  // The restarted server has no data, because the test servers run without
  // persistence, so only keys sent after the restart can replay.
  await server.start()
  const recovered = await postWhile(app.url, 'after-restart', 503, 20_000)
  t.comment(`service came back after ${recovered.tries} tries`)
  t.equal(recovered.status, 200)
  t.equal(app.runs(), 2)

  const replay = await post(app.url, 'after-restart')
  t.equal(replay.status, 409)
  t.equal(replay.replayed, 'true')
  t.equal(replay.body, recovered.body)
  t.equal(app.runs(), 2)
})

t.test('paused Redis gets 503 then replays', async (t) => {
  const server = await startRedisServer(t)
  if (server === null) {
    return
  }
  const admin = await connectAdmin(t, server)
  // The default lockTtl of 30 s outlasts the test, so a claim left behind
  // by the outage would show as 423.
  const app = await startApp(t, server, {
    client: { ...failFastOptions, commandTimeout: 200 },
    lockTimeout: 0
  })
  const before = await post(app.url, 'paid-before')
  t.equal(before.status, 200)

  // The server keeps its data and its connections, but runs no client
  // commands for 2 s, like a server stalled by a slow command.
  t.equal(await admin.client('PAUSE', 2000, 'ALL'), 'OK')
  const outage = await Promise.all([post(app.url, 'paid-before'), post(app.url, 'new-during')])
  for (const response of outage) {
    t.equal(response.status, 503)
    t.equal(response.code, 'FST_IDEMPOTENCY_STORAGE_UNAVAILABLE')
    t.ok(response.elapsed < fastResponseLimit, `503 took ${response.elapsed} ms`)
  }
  t.equal(app.runs(), 1)
  const exempt = await post(app.url, 'paid-before', '/webhooks')
  t.equal(exempt.status, 200)

  const replay = await postWhile(app.url, 'paid-before', 503, 15_000)
  t.comment(`service came back after ${replay.tries} tries`)
  t.equal(replay.status, 409)
  t.equal(replay.replayed, 'true')
  t.equal(replay.body, before.body)
  t.equal(app.runs(), 1)

  // The claim of new-during timed out on the client, but Redis still ran it
  // when the pause ended. The release that the plugin sent after the failed
  // claim, on the same connection, ran right after it, so the key is free.
  const afterPause = await post(app.url, 'new-during')
  t.equal(afterPause.status, 200)
  t.equal(app.runs(), 2)
  const replayAfterPause = await post(app.url, 'new-during')
  t.equal(replayAfterPause.status, 409)
  t.equal(replayAfterPause.body, afterPause.body)
  t.equal(app.runs(), 2)
})

t.test('failed store keeps the claim', async (t) => {
  const server = await startRedisServer(t)
  if (server === null) {
    return
  }
  const admin = await connectAdmin(t, server)
  const lockTtl = 3000
  const app = await startApp(t, server, {
    client: {
      ...failFastOptions,
      // Reconnect after 1 s, so the store right after the handler finds the
      // connection still closed.
      retryStrategy: () => 1000
    },
    lockTtl,
    lockTimeout: 0,
    async duringRun (run, client) {
      if (run > 1) {
        return
      }
      // Redis keeps the claim, and only this app's connection closes.
      const id = await client.client('ID')
      await admin.client('KILL', 'ID', String(id))
      await waitFor('the connection closes', 5000, () => client.status !== 'ready')
    }
  })

  const response = await post(app.url, 'store-fails')
  t.equal(response.status, 200)
  t.same(JSON.parse(response.body), { run: 1 })
  const errors = errorLines(app.logs)
  t.equal(errors.length, 1)
  t.equal(errors[0]?.msg, 'idempotency storage failed or timed out after the handler ran, so the response may not be stored')
  t.match(errors[0]?.err?.message, /enableOfflineQueue/)

  // Retries get 503 until the client reconnects, then 423 while the claim
  // of the first run lives, since no response was stored to replay.
  const retry = await postWhile(app.url, 'store-fails', 503, 10_000)
  t.equal(retry.status, 423)
  t.equal(app.runs(), 1)

  // Once the lease ends, nothing records that the handler ran, so it runs
  // again: a failed store gives at-least-once, not exactly-once.
  const afterLease = await postWhile(app.url, 'store-fails', 423, lockTtl + 10_000)
  t.equal(afterLease.status, 200)
  t.equal(app.runs(), 2)
})

t.test('timed-out store may still land', async (t) => {
  const server = await startRedisServer(t)
  if (server === null) {
    return
  }
  const admin = await connectAdmin(t, server)
  const app = await startApp(t, server, {
    client: { ...failFastOptions, commandTimeout: 200 },
    lockTimeout: 0,
    async duringRun (run) {
      if (run === 1) {
        await admin.client('PAUSE', 1000, 'ALL')
      }
    }
  })

  const response = await post(app.url, 'store-times-out')
  t.equal(response.status, 200)
  t.same(JSON.parse(response.body), { run: 1 })
  const errors = errorLines(app.logs)
  t.equal(errors.length, 1)
  t.equal(errors[0]?.msg, 'idempotency storage failed or timed out after the handler ran, so the response may not be stored')
  t.equal(errors[0]?.err?.message, 'Command timed out')

  // Redis ran the store when the pause ended, after the client gave up on
  // it, so the retry replays in place of getting 423.
  const retry = await postWhile(app.url, 'store-times-out', 503, 10_000)
  t.equal(retry.status, 409)
  t.equal(retry.replayed, 'true')
  t.equal(retry.body, response.body)
  t.equal(app.runs(), 1)
})
