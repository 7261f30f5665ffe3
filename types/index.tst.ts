// Type tests for the emitted declarations: this file must compile, and each
// `@ts-expect-error` line must fail to compile, under `npm run test:types`.
import Fastify, { type FastifyRequest, type RouteShorthandOptions } from 'fastify'
import idempotency, {
  idempotency as namedIdempotency,
  MemoryStorage,
  RedisStorage,
  type IdempotencyMode,
  type IdempotencyOptions,
  type IdempotencyStorage,
  type StoredResponse
} from 'fastify-idempotency-key'
import { Redis } from 'ioredis'

function expectType<T> (value: T): T {
  return value
}

async function goodUse () {
  const app = Fastify()
  await app.register(idempotency, { mode: 'required' })
  await app.register(namedIdempotency, {
    mode: 'exempt',
    header: 'x-idempotency-key',
    storage: new MemoryStorage({ maxEntries: 100 }),
    encoder: (request: FastifyRequest, key: string) => `${request.url}:${key}`,
    conflictStatusCode: null,
    lock: true,
    lockTimeout: 100,
    lockTtl: 30_000,
    lockedStatusCode: 409,
    storeOnStatuses: [200, 201],
    ttl: 60_000,
    fingerprint: false
  })
  await app.register(idempotency, { storage: 'redis', redisNamespace: 'cache', keyPrefix: 'app:' })

  app.post('/orders', async () => ({ ok: true }))
  app.post('/webhooks', { config: { idempotency: 'exempt' } }, async () => ({ ok: true }))
  app.post('/search', { config: { idempotency: 'optional' } }, async () => ({ ok: true }))
  app.post('/jobs', {
    config: { idempotency: { mode: 'required', ttl: 1000, storeOnStatuses: [202], conflictStatusCode: 409 } }
  }, async () => ({ ok: true }))
  app.post('/charges', { config: { idempotency: 'manual' } }, async (request) => {
    expectType<string | null>(request.idempotency.key)
    expectType<boolean>(request.idempotency.exists)
    const response = expectType<StoredResponse | null>(request.idempotency.response)
    if (response !== null) {
      expectType<number>(response.statusCode)
      expectType<string | Buffer>(response.body)
      expectType<string | string[] | undefined>(response.headers['content-type'])
    }
    return { ok: true }
  })

  const mode: IdempotencyMode = 'manual'
  const options: IdempotencyOptions = { mode: 'exempt' }
  const storage: IdempotencyStorage = new RedisStorage(new Redis(), { keyPrefix: 'app:' })
  return { mode, options, storage }
}

async function mistakes () {
  const app = Fastify()
  // Fastify infers a route's config type from an inline literal, which
  // hides the augmentation there, so these checks use declared options. The
  // plugin rejects both mistakes at route registration either way.
  // @ts-expect-error a misspelt mode does not compile
  const misspelt: RouteShorthandOptions = { config: { idempotency: 'requird' } }
  // @ts-expect-error a route cannot set the plugin-wide lock
  const lockOff: RouteShorthandOptions = { config: { idempotency: { lock: false } } }
  app.post('/orders', misspelt, async () => ({ ok: true }))
  app.post('/jobs', lockOff, async () => ({ ok: true }))
  // @ts-expect-error manual is a route mode, not a plugin mode
  await app.register(idempotency, { mode: 'manual' })
  // @ts-expect-error durations are numbers of milliseconds
  await app.register(idempotency, { ttl: '1 day' })
  // @ts-expect-error an unknown option does not compile
  await app.register(idempotency, { lockTimout: 100 })
  // @ts-expect-error a storage must implement every method
  await app.register(idempotency, { storage: { get: async () => null } })
  app.post('/charges', async (request) => {
    // @ts-expect-error the decoration is read-only data, not a function
    request.idempotency()
    return { ok: true }
  })
}

export { goodUse, mistakes }
