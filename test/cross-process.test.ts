import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { describeStatuses, post } from './helpers/payments'
import { startServerProcess, type ServerProcess, type ServerProcessOptions } from './fixtures/server'
import { startRedisServer } from './helpers/redis'

// Each test starts a redis-server and two server processes, and the kill
// test waits out a 3 s lease, which takes longer on a busy machine.
t.setTimeout(180_000)

/** Polls `check` every 50 ms until it returns true, or throws after `timeout` ms. */
async function waitFor (what: string, timeout: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeout
  while (Date.now() < deadline) {
    if (await check()) {
      return
    }
    await sleep(50)
  }
  throw new Error(`Timed out after ${timeout} ms waiting until ${what}`)
}

interface Setup {
  servers: ServerProcess[]
  /** Returns the handler runs of each idempotency key, over all processes. */
  runs (): Promise<Record<string, string>>
}

/**
 * Starts a private redis-server and one server process per entry of
 * `processes`, all sharing that Redis and one runs counter. Returns null
 * when the test was skipped for lack of redis-server.
 */
async function setup (t: Test, processes: Array<Omit<ServerProcessOptions, 'redisUrl' | 'runsKey'>>): Promise<Setup | null> {
  const redisServer = await startRedisServer(t)
  if (redisServer === null) {
    return null
  }
  const runsKey = `runs:${randomUUID()}`
  const client = new Redis(redisServer.url)
  t.teardown(() => client.disconnect())

  const servers = await Promise.all(processes.map((options) => startServerProcess(t, {
    ...options,
    redisUrl: redisServer.url,
    runsKey
  })))
  return { servers, runs: () => client.hgetall(runsKey) }
}

t.test('100 duplicates over 2 processes run once', async (t) => {
  const options = { handlerDelay: 200, lockTimeout: 10_000 }
  const context = await setup(t, [options, options])
  if (context === null) {
    return
  }
  const { servers } = context

  const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => {
    return post(servers[i % servers.length]!.url, 'pay-once')
  }))
  t.comment(`100 requests over 2 processes: ${describeStatuses(responses)}`)

  t.same(await context.runs(), { 'pay-once': '1' })
  const originals = responses.filter((response) => response.status === 200)
  t.equal(originals.length, 1)
  const body = originals[0]?.body
  const originalPid = JSON.parse(body ?? '{}').pid

  const others = responses.filter((response) => response.status !== 200)
  t.equal(others.length, 99)
  for (const response of others) {
    t.ok(response.status === 409 || response.status === 423, `status ${response.status} is 409 or 423`)
    if (response.status === 409) {
      t.equal(response.replayed, 'true')
      t.equal(response.body, body)
    }
  }
  const replaysByOtherProcess = responses.filter((response, i) => {
    return response.status === 409 && servers[i % servers.length]!.pid !== originalPid
  })
  t.ok(replaysByOtherProcess.length > 0, 'the process that did not run the handler replays its response')

  for (const server of servers) {
    const retry = await post(server.url, 'pay-once')
    t.equal(retry.status, 409)
    t.equal(retry.body, body)
  }
  t.same(await context.runs(), { 'pay-once': '1' })
})

t.test('20 keys × 5 duplicates run once each', async (t) => {
  const options = { handlerDelay: 100, lockTimeout: 10_000 }
  const context = await setup(t, [options, options])
  if (context === null) {
    return
  }
  const { servers } = context
  const keys = Array.from({ length: 20 }, (_, i) => `pay-many-${i}`)

  // Five duplicates in a row alternate between the two processes.
  const requests = keys.flatMap((key) => Array.from({ length: 5 }, () => key))
  const responses = await Promise.all(requests.map((key, i) => post(servers[i % servers.length]!.url, key)))
  t.comment(`100 requests for 20 keys over 2 processes: ${describeStatuses(responses)}`)

  const runs = await context.runs()
  t.equal(Object.keys(runs).length, 20)
  for (const key of keys) {
    t.equal(runs[key], '1', `runs of ${key}`)
    const ofKey = responses.filter((_, i) => requests[i] === key)
    const originals = ofKey.filter((response) => response.status === 200)
    t.equal(originals.length, 1, `200 responses of ${key}`)
    for (const response of ofKey) {
      if (response.status === 423) {
        continue
      }
      t.equal(response.body, originals[0]?.body, `body of ${key}`)
    }
    const unexpected = ofKey.filter((response) => ![200, 409, 423].includes(response.status))
    t.same(unexpected, [], `${key} gets only 200, 409 or 423`)
  }
})

t.test('killed process frees its key after lockTtl', async (t) => {
  const lockTtl = 3000
  const context = await setup(t, [
    // The first process is killed while this handler sleeps.
    { handlerDelay: 60_000, lockTtl, lockTimeout: 0 },
    { handlerDelay: 100, lockTtl, lockTimeout: 0 }
  ])
  if (context === null) {
    return
  }
  const [killed, survivor] = context.servers as [ServerProcess, ServerProcess]

  const original = post(killed.url, 'pay-kill').then(
    (response) => `answered ${response.status}`,
    () => 'failed'
  )
  await waitFor('the handler runs', 10_000, async () => (await context.runs())['pay-kill'] === '1')
  await killed.kill()
  const killedAt = Date.now()
  t.equal(await original, 'failed', 'the killed process never answers')

  // The handler renewed the lease every lockTtl / 3 until the kill, so
  // about 2 s or more of it remain.
  const duringLease = await post(survivor.url, 'pay-kill')
  t.equal(duringLease.status, 423)
  t.same(await context.runs(), { 'pay-kill': '1' })

  let retry = duringLease
  let lockedRetries = 0
  const deadline = Date.now() + lockTtl + 10_000
  while (retry.status === 423 && Date.now() < deadline) {
    lockedRetries++
    await sleep(200)
    retry = await post(survivor.url, 'pay-kill')
  }
  t.comment(`${lockedRetries} retries got 423; the key ran again ${Date.now() - killedAt} ms after the kill`)

  t.equal(retry.status, 200)
  t.equal(JSON.parse(retry.body).pid, survivor.pid)
  t.same(await context.runs(), { 'pay-kill': '2' })

  const replay = await post(survivor.url, 'pay-kill')
  t.equal(replay.status, 409)
  t.equal(replay.replayed, 'true')
  t.equal(replay.body, retry.body)
  t.same(await context.runs(), { 'pay-kill': '2' })
})
