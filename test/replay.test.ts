import { Readable } from 'node:stream'
import t from 'tap'
import { createApp } from './helpers/app'
import { eachStorage } from './helpers/storages'

const key = { 'idempotency-key': 'order-1' }

eachStorage(t, 'JSON body replayed', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', async (request, reply) => {
    runs++
    reply.code(201).header('x-order-id', '42')
    return { id: 42, items: [1, 2, 3] }
  })

  const first = await app.inject({ method: 'POST', url: '/orders', headers: key, payload: { a: 1 } })
  const second = await app.inject({ method: 'POST', url: '/orders', headers: key, payload: { a: 1 } })

  t.equal(runs, 1)
  t.equal(first.statusCode, 201)
  t.equal(first.headers['idempotent-replayed'], undefined)
  t.equal(second.statusCode, 409)
  t.equal(second.headers['idempotent-replayed'], 'true')
  t.equal(second.headers['x-order-id'], '42')
  t.equal(second.headers['content-type'], first.headers['content-type'])
  t.equal(second.body, first.body)
  t.equal(second.headers['content-length'], String(Buffer.byteLength(first.body)))
})

eachStorage(t, 'original status replayed with null', async (t, storage) => {
  const app = await createApp(t, { storage, conflictStatusCode: null })
  app.post('/orders', async (request, reply) => reply.code(201).send('created'))

  await app.inject({ method: 'POST', url: '/orders', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(replay.statusCode, 201)
  t.equal(replay.body, 'created')
  t.equal(replay.headers['idempotent-replayed'], 'true')
})

eachStorage(t, 'Buffer body byte for byte', async (t, storage) => {
  const app = await createApp(t, { storage })
  const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  let runs = 0
  app.post('/file', async (request, reply) => {
    runs++
    return reply.type('application/octet-stream').send(bytes)
  })

  await app.inject({ method: 'POST', url: '/file', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/file', headers: key })

  t.equal(runs, 1)
  t.equal(replay.headers['content-type'], 'application/octet-stream')
  t.same(replay.rawPayload, bytes)
  t.equal(replay.headers['content-length'], '256')
})

eachStorage(t, 'plain string body replayed', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.post('/text', async () => 'héllo wörld')

  const first = await app.inject({ method: 'POST', url: '/text', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/text', headers: key })

  t.equal(replay.body, 'héllo wörld')
  t.equal(replay.headers['content-type'], first.headers['content-type'])
  t.equal(replay.headers['content-length'], String(Buffer.byteLength('héllo wörld')))
})

eachStorage(t, 'empty 204 replayed', async (t, storage) => {
  const app = await createApp(t, { storage, conflictStatusCode: null })
  let runs = 0
  app.delete('/orders/1', async (request, reply) => {
    runs++
    return reply.code(204).send()
  })

  await app.inject({ method: 'DELETE', url: '/orders/1', headers: key })
  const replay = await app.inject({ method: 'DELETE', url: '/orders/1', headers: key })

  t.equal(runs, 1)
  t.equal(replay.statusCode, 204)
  t.equal(replay.body, '')
  t.equal(replay.headers['idempotent-replayed'], 'true')
})

eachStorage(t, 'headers filtered and repeated', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.post('/orders', async (request, reply) => {
    reply.header('set-cookie', ['session=secret; HttpOnly'])
    reply.header('x-trace', ['a', 'b'])
    reply.header('date', 'Tue, 01 Jan 2030 00:00:00 GMT')
    reply.header('connection', 'keep-alive')
    reply.header('keep-alive', 'timeout=5')
    return { ok: true }
  })

  await app.inject({ method: 'POST', url: '/orders', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(replay.headers['set-cookie'], undefined)
  t.same(replay.headers['x-trace'], ['a', 'b'])
  t.not(replay.headers.date, 'Tue, 01 Jan 2030 00:00:00 GMT')
  t.equal(replay.headers['keep-alive'], undefined)
  t.equal(replay.headers['content-length'], String(replay.rawPayload.length))
})

eachStorage(t, 'unlisted status releases key', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', async (request, reply) => {
    runs++
    return reply.code(runs === 1 ? 400 : 201).send({ run: runs })
  })

  const first = await app.inject({ method: 'POST', url: '/orders', headers: key })
  const second = await app.inject({ method: 'POST', url: '/orders', headers: key })
  const third = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(first.statusCode, 400)
  t.equal(second.statusCode, 201)
  t.equal(third.statusCode, 409)
  t.same(third.json(), { run: 2 })
  t.equal(runs, 2)
})

eachStorage(t, 'thrown error releases key', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', async () => {
    runs++
    if (runs === 1) {
      throw new Error('payment gateway timed out')
    }
    return { run: runs }
  })

  const failed = await app.inject({ method: 'POST', url: '/orders', headers: key })
  const retried = await app.inject({ method: 'POST', url: '/orders', headers: key })

  t.equal(failed.statusCode, 500)
  t.equal(retried.statusCode, 200)
  t.same(retried.json(), { run: 2 })
  t.equal(runs, 2)
})

eachStorage(t, 'storeOnStatuses per route', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/jobs', { config: { idempotency: { storeOnStatuses: [202, 500] } } }, async (request, reply) => {
    runs++
    return reply.code(500).send({ failed: true })
  })

  await app.inject({ method: 'POST', url: '/jobs', headers: key })
  const replay = await app.inject({ method: 'POST', url: '/jobs', headers: key })

  t.equal(runs, 1)
  t.equal(replay.statusCode, 409)
  t.same(replay.json(), { failed: true })
})

eachStorage(t, 'streamed reply not stored', async (t, storage) => {
  const warnings: string[] = []
  const app = await createApp(t, { storage }, {
    logger: {
      level: 'warn',
      stream: { write: (line: string) => { warnings.push(JSON.parse(line).msg) } }
    }
  })
  let runs = 0
  app.post('/export', async (request, reply) => {
    runs++
    return reply.type('text/csv').send(Readable.from(['a,b\n', '1,2\n']))
  })

  const first = await app.inject({ method: 'POST', url: '/export', headers: key })
  const second = await app.inject({ method: 'POST', url: '/export', headers: key })

  t.equal(first.body, 'a,b\n1,2\n')
  t.equal(second.body, 'a,b\n1,2\n')
  t.equal(second.headers['idempotent-replayed'], undefined)
  t.equal(runs, 2)
  t.match(warnings, [/streamed response cannot be stored/, /streamed response cannot be stored/])
})

eachStorage(t, 'route preHandler runs first', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', {
    preHandler: async (request, reply) => {
      if (request.headers.authorization === undefined) {
        return reply.code(401).send({ error: 'log in first' })
      }
    }
  }, async () => {
    runs++
    return { ok: true }
  })

  const rejected = await app.inject({ method: 'POST', url: '/orders', headers: key })
  const accepted = await app.inject({
    method: 'POST',
    url: '/orders',
    headers: { ...key, authorization: 'Bearer a' }
  })

  t.equal(rejected.statusCode, 401)
  t.equal(accepted.statusCode, 200)
  t.equal(runs, 1)
})
