import fastifyRedis from '@fastify/redis'
import Fastify from 'fastify'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import idempotency from '../index'
import { redisUrl } from './helpers/redis'

const key = { 'idempotency-key': 'order-1' }

async function redisApp (t: Test) {
  const url = await redisUrl(t)
  if (url === null) {
    return null
  }
  const app = Fastify()
  t.teardown(() => app.close())
  const inspector = new Redis(url)
  t.teardown(() => inspector.quit())
  return { app, url, inspector }
}

t.test('storage redis uses @fastify/redis', async (t) => {
  const setup = await redisApp(t)
  if (setup === null) return
  const { app, url, inspector } = setup
  const keyPrefix = `plugin-test:${Date.now()}:`
  await app.register(fastifyRedis, { url })
  await app.register(idempotency, { storage: 'redis', keyPrefix })
  let runs = 0
  app.post('/orders', async () => ({ run: ++runs }))

  await app.inject({ method: 'POST', url: '/orders', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(replay.statusCode, 409)
  t.same(replay.json(), { run: 1 })
  t.equal(runs, 1)
  const stored = await inspector.keys(`${keyPrefix}*`)
  t.equal(stored.length, 1)
  t.ok(await inspector.pttl(stored[0] as string) > 0)
})

t.test('redisNamespace picks the client', async (t) => {
  const setup = await redisApp(t)
  if (setup === null) return
  const { app, url, inspector } = setup
  const keyPrefix = `namespace-test:${Date.now()}:`
  await app.register(fastifyRedis, { url, db: 3, namespace: 'plugin' })
  await app.register(fastifyRedis, { url, db: 4, namespace: 'other' })
  await app.register(idempotency, { storage: 'redis', redisNamespace: 'plugin', keyPrefix })
  app.post('/orders', async () => ({ ok: true }))
  app.post('/imports', { config: { idempotency: { redisNamespace: 'other' } } }, async () => ({ ok: true }))

  await app.inject({ method: 'POST', url: '/orders', headers: key })
  await app.inject({ method: 'POST', url: '/imports', headers: key })

  await inspector.select(3)
  t.equal((await inspector.keys(`${keyPrefix}*`)).length, 1)
  await inspector.select(4)
  t.equal((await inspector.keys(`${keyPrefix}*`)).length, 1)
})

t.test('unknown redisNamespace fails registration', async (t) => {
  const setup = await redisApp(t)
  if (setup === null) return
  const { app, url } = setup
  await app.register(fastifyRedis, { url, namespace: 'cache' })

  const error = await app.register(idempotency, { storage: 'redis', redisNamespace: 'sessions' })
    .then(() => null, (err: Error) => err)

  t.match(error, { code: 'FST_IDEMPOTENCY_INVALID_OPTION', message: /"sessions"/ })
})

t.test('namespaced clients need redisNamespace', async (t) => {
  const setup = await redisApp(t)
  if (setup === null) return
  const { app, url } = setup
  await app.register(fastifyRedis, { url, namespace: 'cache' })

  const error = await app.register(idempotency, { storage: 'redis' })
    .then(() => null, (err: Error) => err)

  t.match(error, { code: 'FST_IDEMPOTENCY_INVALID_OPTION', message: /set redisNamespace/ })
})

t.test('unknown route redisNamespace fails', async (t) => {
  const setup = await redisApp(t)
  if (setup === null) return
  const { app, url } = setup
  await app.register(fastifyRedis, { url })
  await app.register(idempotency, { storage: 'redis' })

  t.throws(() => {
    app.post('/orders', { config: { idempotency: { redisNamespace: 'nope' } } }, async () => ({}))
  }, { code: 'FST_IDEMPOTENCY_INVALID_OPTION', message: /"nope"/ })
})
