import Fastify from 'fastify'
import t from 'tap'
import idempotency, { type IdempotencyOptions } from '../index'
import { createApp } from './helpers/app'

const invalidOptions: Array<[string, unknown, RegExp]> = [
  ['mode', 'manual', /mode.*"manual"/],
  ['header', '', /header/],
  ['header', 'bad header', /header.*"bad header"/],
  ['storage', 'postgres', /storage.*"postgres"/],
  ['storage', { claim () {} }, /storage/],
  ['redisNamespace', 'cache', /redisNamespace.*storage: 'redis'/],
  ['keyPrefix', 5, /keyPrefix.*5/],
  ['encoder', 'sha256', /encoder/],
  ['conflictStatusCode', 700, /conflictStatusCode.*700/],
  ['conflictStatusCode', '409', /conflictStatusCode.*"409"/],
  ['lock', 'yes', /lock.*"yes"/],
  ['lockTimeout', -1, /lockTimeout.*-1/],
  ['lockTimeout', 1.5, /lockTimeout.*1\.5/],
  ['lockTtl', 0, /lockTtl.*0/],
  ['lockTtl', 9, /lockTtl.*from 10 to .*9/],
  ['lockedStatusCode', 42, /lockedStatusCode.*42/],
  ['storeOnStatuses', [], /storeOnStatuses/],
  ['storeOnStatuses', [200, 'ok'], /storeOnStatuses.*"ok"/],
  ['ttl', Infinity, /ttl.*Infinity/],
  ['fingerprint', 1, /fingerprint.*1/],
  ['lockTimout', 100, /lockTimout.*unknown option/],
  ['conflictStatusCode', 204, /conflictStatusCode.*a status with a body.*204/],
  ['conflictStatusCode', 304, /conflictStatusCode.*304/],
  ['conflictStatusCode', 101, /conflictStatusCode.*from 200 to 599.*101/],
  ['lockedStatusCode', 200, /lockedStatusCode.*from 400 to 599.*200/],
  ['lockTtl', 1e14, /lockTtl.*to 2147483647.*100000000000000/],
  ['lockTimeout', 2 ** 31, /lockTimeout.*2147483648/]
]

for (const [name, value, message] of invalidOptions) {
  t.test(`invalid ${name} fails registration`, async (t) => {
    const app = Fastify()
    t.teardown(() => app.close())

    const options = { [name]: value } as IdempotencyOptions
    const error = await app.register(idempotency, options).then(() => null, (err: Error) => err)

    t.ok(error instanceof TypeError)
    t.match(error, { code: 'FST_IDEMPOTENCY_INVALID_OPTION', message })
  })
}

const invalidRouteConfigs: Array<[unknown, RegExp]> = [
  ['sometimes', /POST \/orders config\.idempotency mode.*"sometimes"/],
  [{ mode: 'always' }, /mode.*"always"/],
  [{ ttl: -5 }, /ttl.*-5/],
  [{ storeOnStatuses: 200 }, /storeOnStatuses.*200/],
  [{ conflictStatusCode: 1000 }, /conflictStatusCode.*1000/],
  [{ lock: false }, /lock.*unknown option/],
  [{ redisNamespace: 'cache' }, /redisNamespace.*storage: 'redis'/],
  [42, /a mode or an object/]
]

for (const [config, message] of invalidRouteConfigs) {
  t.test(`route config ${JSON.stringify(config)} fails`, async (t) => {
    const app = await createApp(t)

    t.throws(() => {
      app.post('/orders', { config: { idempotency: config as 'required' } }, async () => ({}))
    }, { code: 'FST_IDEMPOTENCY_INVALID_OPTION', message })
  })
}

t.test('redis storage needs @fastify/redis', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())

  await t.rejects(async () => { await app.register(idempotency, { storage: 'redis' }) }, {
    code: 'FST_IDEMPOTENCY_INVALID_OPTION',
    message: /register it before this plugin/
  })
})

t.test('undefined options take defaults', async (t) => {
  const app = await createApp(t, { ttl: undefined, mode: undefined })
  app.post('/orders', async () => ({ ok: true }))

  const response = await app.inject({ method: 'POST', url: '/orders' })

  t.equal(response.statusCode, 400)
})

t.test('plugin registers twice in scopes', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(async (scope) => {
    await scope.register(idempotency, { header: 'x-a' })
    scope.post('/a', async () => ({ ok: true }))
  })
  await app.register(async (scope) => {
    await scope.register(idempotency, { header: 'x-b' })
    scope.post('/b', async () => ({ ok: true }))
  })

  const a = await app.inject({ method: 'POST', url: '/a', headers: { 'x-a': '1' } })
  const b = await app.inject({ method: 'POST', url: '/b', headers: { 'x-b': '1' } })

  t.equal(a.statusCode, 200)
  t.equal(b.statusCode, 200)
})

t.test('bad encoder result fails the request', async (t) => {
  for (const encoder of [() => '', () => undefined as unknown as string]) {
    const app = await createApp(t, { encoder })
    app.post('/orders', async () => ({ ok: true }))

    const response = await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': 'a' } })

    t.equal(response.statusCode, 500)
    t.equal(response.json().code, 'FST_IDEMPOTENCY_ENCODER_INVALID')
  }
})

t.test('throwing encoder fails the request', async (t) => {
  const app = await createApp(t, {
    encoder: () => { throw new Error('no user on this request') }
  })
  let runs = 0
  app.post('/orders', async () => ({ run: ++runs }))

  const response = await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': 'a' } })

  t.equal(response.statusCode, 500)
  t.equal(response.json().message, 'no user on this request')
  t.equal(runs, 0)
})

t.test('Fastify register options accepted', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(idempotency, { prefix: '/api', logLevel: 'warn' } as IdempotencyOptions)
  app.post('/orders', async () => ({ ok: true }))

  const response = await app.inject({ method: 'POST', url: '/orders' })

  t.equal(response.statusCode, 400)
})

t.test('second registration in one context fails', async (t) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(idempotency)

  const error = await app.register(idempotency).then(() => null, (err: Error) => err)

  t.match(error, { code: 'FST_IDEMPOTENCY_ALREADY_REGISTERED', message: /already registered/ })
})
