import t from 'tap'
import { createApp } from './helpers/app'
import { eachStorage } from './helpers/storages'

const key = { 'idempotency-key': 'k-1' }

t.test('required mode covers unsafe routes', async (t) => {
  const app = await createApp(t)
  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
    app.route({ method, url: '/things', handler: async () => ({ method }) })
  }

  for (const method of ['POST', 'PUT', 'PATCH', 'DELETE'] as const) {
    const response = await app.inject({ method, url: '/things' })
    t.equal(response.statusCode, 400, method)
  }
})

t.test('safe methods never checked', async (t) => {
  for (const mode of ['required', 'exempt'] as const) {
    const app = await createApp(t, { mode })
    let runs = 0
    for (const method of ['GET', 'OPTIONS'] as const) {
      app.route({
        method,
        url: '/things',
        config: { idempotency: 'required' },
        handler: async (request) => {
          runs++
          return { key: request.idempotency.key }
        }
      })
    }
    app.route({ method: 'TRACE' as 'GET', url: '/trace', handler: async () => ({ ok: true }) })

    for (const method of ['GET', 'GET', 'HEAD', 'OPTIONS'] as const) {
      const response = await app.inject({ method, url: '/things', headers: key })
      t.equal(response.statusCode, 200, `${mode} ${method}`)
      t.equal(response.headers['idempotent-replayed'], undefined)
    }
    t.equal(runs, 4)
  }
})

t.test('mixed method route checks only unsafe', async (t) => {
  const app = await createApp(t)
  app.route({ method: ['GET', 'POST'], url: '/things', handler: async () => ({ ok: true }) })

  const get = await app.inject({ method: 'GET', url: '/things' })
  const post = await app.inject({ method: 'POST', url: '/things' })

  t.equal(get.statusCode, 200)
  t.equal(post.statusCode, 400)
})

t.test('exempt mode lets routes opt in', async (t) => {
  const app = await createApp(t, { mode: 'exempt' })
  let plainRuns = 0
  app.post('/plain', async () => ({ run: ++plainRuns }))
  app.post('/guarded', { config: { idempotency: 'required' } }, async () => ({ ok: true }))

  const plain1 = await app.inject({ method: 'POST', url: '/plain', headers: key })
  const plain2 = await app.inject({ method: 'POST', url: '/plain', headers: key })
  const guarded = await app.inject({ method: 'POST', url: '/guarded' })

  t.same(plain1.json(), { run: 1 })
  t.same(plain2.json(), { run: 2 })
  t.equal(guarded.statusCode, 400)
})

t.test('exempt route runs every time', async (t) => {
  const app = await createApp(t)
  let runs = 0
  app.post('/webhooks', { config: { idempotency: 'exempt' } }, async (request) => {
    runs++
    return { key: request.idempotency.key, exists: request.idempotency.exists }
  })

  const first = await app.inject({ method: 'POST', url: '/webhooks', headers: key })
  await app.inject({ method: 'POST', url: '/webhooks', headers: key })
  await app.inject({ method: 'POST', url: '/webhooks' })

  t.equal(runs, 3)
  t.same(first.json(), { key: null, exists: false })
})

eachStorage(t, 'optional route uses a sent key', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/search', { config: { idempotency: 'optional' } }, async () => ({ run: ++runs }))

  await app.inject({ method: 'POST', url: '/search' })
  await app.inject({ method: 'POST', url: '/search' })
  await app.inject({ method: 'POST', url: '/search', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/search', headers: key })
  const invalid = await app.inject({ method: 'POST', url: '/search', headers: { 'idempotency-key': '' } })

  t.equal(runs, 3)
  t.equal(replay.statusCode, 409)
  t.same(replay.json(), { run: 3 })
  t.equal(invalid.statusCode, 400)
})

eachStorage(t, 'manual route sees the record', async (t, storage) => {
  const app = await createApp(t, { storage })
  const seen: Array<{ exists: boolean, body: string | null }> = []
  let charges = 0
  app.post('/refunds', { config: { idempotency: 'manual' } }, async (request, reply) => {
    const { exists, response } = request.idempotency
    seen.push({ exists, body: response === null ? null : String(response.body) })
    if (exists && response !== null) {
      return reply.code(200).type('application/json').send(response.body)
    }
    charges++
    return reply.code(201).send({ refund: charges })
  })

  const first = await app.inject({ method: 'POST', url: '/refunds', headers: key })
  const second = await app.inject({ method: 'POST', url: '/refunds', headers: key })
  const missing = await app.inject({ method: 'POST', url: '/refunds' })

  t.equal(first.statusCode, 201)
  t.equal(second.statusCode, 200)
  t.same(second.json(), { refund: 1 })
  t.equal(second.headers['idempotent-replayed'], undefined)
  t.equal(charges, 1)
  t.same(seen, [{ exists: false, body: null }, { exists: true, body: '{"refund":1}' }])
  t.equal(missing.statusCode, 400)
})

eachStorage(t, 'manual response replaces record', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/refunds', { config: { idempotency: 'manual' } }, async (request, reply) => {
    runs++
    const previous = request.idempotency.response
    if (runs === 2) {
      return reply.code(500).send({ failed: true })
    }
    return { run: runs, previous: previous === null ? null : JSON.parse(String(previous.body)) }
  })

  await app.inject({ method: 'POST', url: '/refunds', headers: key })
  await app.inject({ method: 'POST', url: '/refunds', headers: key })
  const third = await app.inject({ method: 'POST', url: '/refunds', headers: key })
  const fourth = await app.inject({ method: 'POST', url: '/refunds', headers: key })

  // The failed second run released its claim and left the first record.
  t.same(third.json(), { run: 3, previous: { run: 1, previous: null } })
  t.same(fourth.json().previous.run, 3)
})

eachStorage(t, 'manual route without lock', async (t, storage) => {
  const app = await createApp(t, { storage, lock: false })
  const seen: boolean[] = []
  app.post('/refunds', { config: { idempotency: 'manual' } }, async (request) => {
    seen.push(request.idempotency.exists)
    return { run: seen.length }
  })

  await app.inject({ method: 'POST', url: '/refunds', headers: key })
  const second = await app.inject({ method: 'POST', url: '/refunds', headers: key })

  t.same(seen, [false, true])
  t.same(second.json(), { run: 2 })
})

eachStorage(t, 'route object overrides options', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', {
    config: { idempotency: { mode: 'optional', conflictStatusCode: null, ttl: 60_000 } }
  }, async (request, reply) => reply.code(201).send({ run: ++runs }))

  await app.inject({ method: 'POST', url: '/orders' })
  await app.inject({ method: 'POST', url: '/orders', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(replay.statusCode, 201)
  t.equal(replay.headers['idempotent-replayed'], 'true')
  t.equal(runs, 2)
})

eachStorage(t, 'ttl expires stored responses', async (t, storage) => {
  const app = await createApp(t, { storage, ttl: 100 })
  let runs = 0
  app.post('/orders', async () => ({ run: ++runs }))

  await app.inject({ method: 'POST', url: '/orders', headers: key })
  const early = await app.inject({ method: 'POST', url: '/orders', headers: key })
  await new Promise((resolve) => setTimeout(resolve, 150))
  const late = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(early.statusCode, 409)
  t.equal(late.statusCode, 200)
  t.same(late.json(), { run: 2 })
})

t.test('request.idempotency on every request', async (t) => {
  const app = await createApp(t)
  app.get('/status', async (request) => request.idempotency)
  app.post('/orders', async (request) => request.idempotency)

  const get = await app.inject({ method: 'GET', url: '/status' })
  const post = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.same(get.json(), { key: null, exists: false, response: null })
  t.same(post.json(), { key: 'k-1', exists: false, response: null })
})
