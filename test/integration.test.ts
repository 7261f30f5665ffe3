import { gunzipSync, gzipSync } from 'node:zlib'
import fastifyCompress from '@fastify/compress'
import fastifyMultipart from '@fastify/multipart'
import Fastify from 'fastify'
import t from 'tap'
import idempotency from '../index'
import { createApp, listen } from './helpers/app'
import { eachStorage } from './helpers/storages'

const key = { 'idempotency-key': 'upload-1' }

function multipartBody (content: string) {
  const boundary = 'boundary42'
  const body = `--${boundary}\r\n` +
    'Content-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\n' +
    `${content}\r\n--${boundary}--\r\n`
  return { body, contentType: `multipart/form-data; boundary=${boundary}` }
}

eachStorage(t, 'multipart read as a stream', async (t, storage) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyMultipart)
  await app.register(idempotency, { storage })
  let runs = 0
  app.post('/upload', async (request) => {
    runs++
    const file = await request.file()
    return { size: (await file?.toBuffer())?.length }
  })
  const base = await listen(app)
  const upload = (content: string) => {
    const { body, contentType } = multipartBody(content)
    return fetch(`${base}/upload`, { method: 'POST', headers: { ...key, 'content-type': contentType }, body })
  }

  const first = await upload('hello')
  const retry = await upload('hello')

  t.equal(first.status, 200)
  t.same(await first.json(), { size: 5 })
  t.equal(retry.status, 409)
  t.same(await retry.json(), { size: 5 })
  t.equal(runs, 1)
})

eachStorage(t, 'multipart fields fingerprinted', async (t, storage) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyMultipart, { attachFieldsToBody: 'keyValues' })
  await app.register(idempotency, { storage })
  let runs = 0
  app.post('/payments', async (request, reply) => {
    runs++
    return reply.code(201).send({ amount: (request.body as { amount: string }).amount })
  })
  const pay = (amount: string) => {
    const boundary = 'fields42'
    const payload = `--${boundary}\r\nContent-Disposition: form-data; name="amount"\r\n\r\n${amount}\r\n--${boundary}--\r\n`
    return app.inject({
      method: 'POST',
      url: '/payments',
      headers: { ...key, 'content-type': `multipart/form-data; boundary=${boundary}` },
      payload
    })
  }

  const first = await pay('10')
  const changed = await pay('9999')
  const retry = await pay('10')

  t.equal(first.statusCode, 201)
  t.equal(changed.statusCode, 422)
  t.equal(retry.statusCode, 409)
  t.same(retry.json(), { amount: '10' })
  t.equal(runs, 1)
})

eachStorage(t, 'gzip request body with length', async (t, storage) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyCompress)
  await app.register(idempotency, { storage })
  let runs = 0
  app.post('/orders', async (request, reply) => {
    runs++
    return reply.code(201).send(request.body)
  })
  const send = (amount: number, level = 9) => app.inject({
    method: 'POST',
    url: '/orders',
    headers: { ...key, 'content-type': 'application/json', 'content-encoding': 'gzip' },
    payload: gzipSync(JSON.stringify({ amount }), { level })
  })

  const first = await send(10)
  const retry = await send(10)
  // The fingerprint covers the decompressed body that the parser reads.
  const otherLevel = await send(10, 1)
  const changed = await send(11)

  t.equal(first.statusCode, 201)
  t.same(first.json(), { amount: 10 })
  t.equal(retry.statusCode, 409)
  t.equal(otherLevel.statusCode, 409)
  t.equal(changed.statusCode, 422)
  t.equal(runs, 1)
})

eachStorage(t, 'routes apart by constraint', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.post('/orders', { constraints: { version: '1.0.0' } }, async () => ({ version: 1 }))
  app.post('/orders', { constraints: { version: '2.0.0' } }, async () => ({ version: 2 }))

  const v1 = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, 'accept-version': '1.0.0' } })
  const v2 = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, 'accept-version': '2.0.0' } })

  t.equal(v1.statusCode, 200)
  t.equal(v2.statusCode, 200)
  t.same(v2.json(), { version: 2 })
})

eachStorage(t, 'pass-through body parser', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.addContentTypeParser('application/octet-stream', (request, payload, done) => done(null, payload))
  let runs = 0
  app.post('/raw', async (request) => {
    runs++
    let size = 0
    for await (const chunk of request.body as AsyncIterable<Buffer>) {
      size += chunk.length
    }
    return { size }
  })
  const base = await listen(app)
  const send = () => fetch(`${base}/raw`, {
    method: 'POST',
    headers: { ...key, 'content-type': 'application/octet-stream' },
    body: Buffer.alloc(20_000, 1)
  })

  const first = await send()
  const retry = await send()

  t.same(await first.json(), { size: 20_000 })
  t.equal(retry.status, 409)
  t.same(await retry.json(), { size: 20_000 })
  t.equal(runs, 1)
})

eachStorage(t, 'compression registered first', async (t, storage) => {
  const app = Fastify()
  t.teardown(() => app.close())
  await app.register(fastifyCompress, { threshold: 0 })
  await app.register(idempotency, { storage })
  let runs = 0
  const items = Array.from({ length: 200 }, (_, i) => ({ id: i, name: `item ${i}` }))
  app.post('/report', async () => {
    runs++
    return { items }
  })

  const gzipped = await app.inject({
    method: 'POST',
    url: '/report',
    headers: { ...key, 'accept-encoding': 'gzip' }
  })
  const plain = await app.inject({
    method: 'POST',
    url: '/report',
    headers: { ...key, 'accept-encoding': 'identity' }
  })
  const gzippedAgain = await app.inject({
    method: 'POST',
    url: '/report',
    headers: { ...key, 'accept-encoding': 'gzip' }
  })

  t.equal(runs, 1)
  t.equal(gzipped.headers['content-encoding'], 'gzip')
  t.same(JSON.parse(gunzipSync(gzipped.rawPayload).toString()), { items })
  t.equal(plain.statusCode, 409)
  t.equal(plain.headers['content-encoding'], undefined)
  t.same(plain.json(), { items })
  t.equal(gzippedAgain.headers['content-encoding'], 'gzip')
  t.same(JSON.parse(gunzipSync(gzippedAgain.rawPayload).toString()), { items })
})

eachStorage(t, 'replay keeps per-request headers', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.addHook('onRequest', async (request, reply) => {
    reply.header('access-control-allow-origin', String(request.headers.origin))
    reply.header('x-request-id', request.id)
  })
  app.post('/orders', async (request, reply) => reply.header('x-order', '7').send({ ok: true }))

  await app.inject({ method: 'POST', url: '/orders', headers: { ...key, origin: 'https://a.example' } })
  const replay = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, origin: 'https://b.example' } })

  t.equal(replay.statusCode, 409)
  t.equal(replay.headers['access-control-allow-origin'], 'https://b.example')
  t.equal(replay.headers['x-request-id'], 'req-2')
  t.equal(replay.headers['x-order'], '7')
})

eachStorage(t, 'path spellings name one route', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', async () => ({ run: ++runs }))
  app.post('/accounts/:id/pay', async (request) => ({ run: ++runs, params: request.params }))

  await app.inject({ method: 'POST', url: '/orders', headers: key })
  const encoded = await app.inject({ method: 'POST', url: '/%6Frders', headers: key })
  await app.inject({ method: 'POST', url: '/accounts/a1/pay', headers: key })
  const encodedParam = await app.inject({ method: 'POST', url: '/accounts/%61%31/pay', headers: key })
  const otherParam = await app.inject({ method: 'POST', url: '/accounts/a2/pay', headers: key })

  t.equal(encoded.statusCode, 409)
  t.equal(encodedParam.statusCode, 409)
  t.equal(otherParam.statusCode, 200)
  t.equal(runs, 3)
})

t.test('QUERY method never checked', async (t) => {
  const app = await createApp(t)
  let runs = 0
  app.route({ method: 'QUERY', url: '/search', handler: async () => ({ run: ++runs }) })

  const query = { method: 'QUERY' as 'GET', url: '/search', payload: { q: 'shoes' } }
  const first = await app.inject(query)
  const second = await app.inject({ ...query, headers: key })

  t.equal(first.statusCode, 200)
  t.equal(second.statusCode, 200)
  t.equal(runs, 2)
})
