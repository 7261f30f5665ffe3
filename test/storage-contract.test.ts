import { randomUUID } from 'node:crypto'
import type { EventEmitter } from 'node:events'
import { Cluster, Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { MemoryStorage } from '../lib/memory-storage'
import { RedisStorage } from '../lib/redis-storage'
import type { ClaimOptions } from '../lib/storage'
import { storageContract } from '../lib/storage-contract'
import type { IdempotencyStorage } from '../lib/storage'
import { redisUrl, startRedisCluster, startRedisServer } from './helpers/redis'

function runContract (t: Test, storage: IdempotencyStorage): void {
  for (const contractCase of storageContract()) {
    t.test(contractCase.name, () => contractCase.run(storage))
  }
}

function claimOptions (overrides: Partial<ClaimOptions> = {}): ClaimOptions {
  return {
    token: randomUUID(),
    fingerprint: `fingerprint-${randomUUID()}`,
    lease: 60_000,
    takeover: false,
    ...overrides
  }
}

const record = {
  state: 'completed',
  fingerprint: 'fingerprint-completed',
  response: { statusCode: 200, headers: {}, body: 'done' }
} as const

/**
 * Waits for an event, unlike `events.once`, which rejects on the 'error'
 * events that a reconnecting client emits.
 */
function nextEvent (emitter: EventEmitter, name: string): Promise<void> {
  return new Promise((resolve) => emitter.once(name, () => resolve()))
}

async function connect (t: Test): Promise<Redis | null> {
  const url = await redisUrl(t)
  if (url === null) {
    return null
  }
  const client = new Redis(url)
  t.teardown(() => client.disconnect())
  return client
}

t.test('MemoryStorage', async (t) => {
  runContract(t, new MemoryStorage())
})

t.test('RedisStorage', async (t) => {
  const client = await connect(t)
  if (client === null) {
    return
  }
  runContract(t, new RedisStorage(client))
})

t.test('RedisStorage over Cluster', async (t) => {
  const nodes = await startRedisCluster(t)
  if (nodes === null) {
    return
  }
  const cluster = new Cluster(nodes)
  t.teardown(() => cluster.disconnect())
  runContract(t, new RedisStorage(cluster))

  t.test('keys spread over nodes', async (t) => {
    const storage = new RedisStorage(cluster, { keyPrefix: `spread:${randomUUID()}:` })
    const keys = Array.from({ length: 30 }, () => randomUUID())
    await Promise.all(keys.map((key) => storage.claim(key, claimOptions())))

    const sizes = await Promise.all(cluster.nodes('master').map((node) => node.dbsize()))
    t.equal(sizes.length, 3)
    t.ok(sizes.filter((size) => size > 0).length >= 2, `keys per node: ${sizes.join(', ')}`)
  })
})

t.test('RedisStorage keys', async (t) => {
  const client = await connect(t)
  if (client === null) {
    return
  }

  t.test('default keyPrefix', async (t) => {
    const storage = new RedisStorage(client)
    const key = randomUUID()
    await storage.claim(key, claimOptions())

    t.equal(storage.keyPrefix, 'idempotency:')
    t.equal(await client.exists(`idempotency:${key}`), 1)
  })

  t.test('custom keyPrefix', async (t) => {
    const keyPrefix = `test:${randomUUID()}:`
    const storage = new RedisStorage(client, { keyPrefix })
    const key = randomUUID()
    await storage.claim(key, claimOptions({ lease: 60_000 }))

    t.equal(await client.exists(`${keyPrefix}${key}`), 1)
    t.equal(await client.exists(key), 0)
    t.equal(await client.exists(`idempotency:${key}`), 0)
    const pttl = await client.pttl(`${keyPrefix}${key}`)
    t.ok(pttl > 0, `PTTL ${pttl} is positive`)
    t.ok(pttl <= 60_000, `PTTL ${pttl} is within the lease`)
  })

  t.test('prefixes keep storages apart', async (t) => {
    const first = new RedisStorage(client, { keyPrefix: `test:${randomUUID()}:` })
    const second = new RedisStorage(client, { keyPrefix: `test:${randomUUID()}:` })
    const key = randomUUID()
    const firstClaim = claimOptions()
    const secondClaim = claimOptions()

    t.same(await first.claim(key, firstClaim), { claimed: true, previous: null })
    t.same(await second.claim(key, secondClaim), { claimed: true, previous: null })
    t.equal(await first.complete(key, firstClaim.token, record, 60_000), true)
    t.same(await second.get(key), { state: 'in-flight', fingerprint: secondClaim.fingerprint })
    t.equal(await second.complete(key, firstClaim.token, record, 60_000), false)
  })

  t.test('key expires at the later end', async (t) => {
    const keyPrefix = `test:${randomUUID()}:`
    const storage = new RedisStorage(client, { keyPrefix })
    const key = randomUUID()
    const redisKey = `${keyPrefix}${key}`
    const first = claimOptions({ lease: 60_000 })
    await storage.claim(key, first)
    await storage.complete(key, first.token, record, 5_000)
    const completedPttl = await client.pttl(redisKey)
    t.ok(completedPttl > 4_000, `PTTL ${completedPttl} follows the ttl`)
    t.ok(completedPttl <= 5_000, `PTTL ${completedPttl} is within the ttl`)

    const takeover = claimOptions({ lease: 30_000, takeover: true })
    await storage.claim(key, takeover)
    const claimedPttl = await client.pttl(redisKey)
    t.ok(claimedPttl > 29_000, `PTTL ${claimedPttl} follows the lease`)
    t.ok(claimedPttl <= 30_000, `PTTL ${claimedPttl} is within the lease`)

    await storage.release(key, takeover.token)
    const releasedPttl = await client.pttl(redisKey)
    t.ok(releasedPttl > 0, `PTTL ${releasedPttl} is positive`)
    t.ok(releasedPttl <= 5_000, `PTTL ${releasedPttl} is back within the ttl`)
  })

  t.test('release deletes a key without record', async (t) => {
    const keyPrefix = `test:${randomUUID()}:`
    const storage = new RedisStorage(client, { keyPrefix })
    const key = randomUUID()
    const options = claimOptions()
    await storage.claim(key, options)
    await storage.release(key, options.token)

    t.equal(await client.exists(`${keyPrefix}${key}`), 0)
  })

  t.test('string body reads back as Buffer', async (t) => {
    const storage = new RedisStorage(client)
    const key = randomUUID()
    const options = claimOptions()
    await storage.claim(key, options)
    await storage.complete(key, options.token, record, 60_000)

    const stored = await storage.get(key)
    t.equal(stored?.state, 'completed')
    const body = stored?.state === 'completed' ? stored.response.body : null
    t.ok(Buffer.isBuffer(body))
    t.equal(String(body), 'done')
  })
})

t.test('RedisStorage input checks', async (t) => {
  const client = await connect(t)
  if (client === null) {
    return
  }
  const storage = new RedisStorage(client)

  t.test('invalid keyPrefix throws', async (t) => {
    const keyPrefix = 5 as unknown as string
    t.throws(() => new RedisStorage(client, { keyPrefix }), TypeError)
  })

  t.test('invalid lease rejects', async (t) => {
    const key = randomUUID()
    await t.rejects(storage.claim(key, claimOptions({ lease: Number.NaN })), TypeError)
    await t.rejects(storage.claim(key, claimOptions({ lease: 1.5 })), TypeError)
    await t.rejects(storage.claim(key, claimOptions({ lease: -1 })), TypeError)
    await t.rejects(storage.renew(key, 'token', Infinity), TypeError)
    t.equal(await storage.get(key), null)
  })

  t.test('invalid ttl rejects', async (t) => {
    const key = randomUUID()
    const options = claimOptions()
    await storage.claim(key, options)
    await t.rejects(storage.complete(key, options.token, record, 2 ** 60), TypeError)
    t.same(await storage.get(key), { state: 'in-flight', fingerprint: options.fingerprint })
  })

  t.test('wrong key type rejects', async (t) => {
    const key = randomUUID()
    await client.set(`idempotency:${key}`, 'not a hash', 'PX', 60_000)
    await t.rejects(storage.get(key), /WRONGTYPE/)
    await t.rejects(storage.claim(key, claimOptions()), /WRONGTYPE/)
  })
})

t.test('RedisStorage commands', async (t) => {
  const client = await connect(t)
  if (client === null) {
    return
  }

  t.test('storages share one client', async (t) => {
    const first = new RedisStorage(client, { keyPrefix: `test:${randomUUID()}:` })
    const second = new RedisStorage(client, { keyPrefix: `test:${randomUUID()}:` })
    const key = randomUUID()
    t.same(await first.claim(key, claimOptions()), { claimed: true, previous: null })
    t.same(await second.claim(key, claimOptions()), { claimed: true, previous: null })
  })

  t.test('conflicting command throws', async (t) => {
    const other = client.duplicate({ lazyConnect: true })
    other.defineCommand('idempotencyRenew', { numberOfKeys: 1, lua: 'return 1' })
    t.throws(() => new RedisStorage(other), /idempotencyRenew is already defined/)
    t.equal('idempotencyClaim' in other, false, 'no command was defined')
    other.disconnect()
  })
})

t.test('RedisStorage server restart', async (t) => {
  const server = await startRedisServer(t)
  if (server === null) {
    return
  }
  // No offline queue and no retries, so commands fail fast while down.
  const client = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 })
  client.on('error', () => {})
  t.teardown(() => client.disconnect())
  await nextEvent(client, 'ready')
  const storage = new RedisStorage(client)
  const key = randomUUID()
  t.same(await storage.claim(key, claimOptions()), { claimed: true, previous: null })

  const closed = nextEvent(client, 'close')
  await server.stop()
  await closed
  await t.rejects(storage.get(key), 'get rejects while Redis is down')
  await t.rejects(storage.claim(key, claimOptions()), 'claim rejects while Redis is down')

  const ready = nextEvent(client, 'ready')
  await server.start()
  await ready
  // The server came back empty, without its data or script cache.
  t.equal(await storage.get(key), null)
  t.same(await storage.claim(key, claimOptions()), { claimed: true, previous: null })

  await client.script('FLUSH')
  t.equal((await storage.get(key))?.state, 'in-flight', 'script reloads after SCRIPT FLUSH')
})
