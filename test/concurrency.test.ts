import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createApp, listen } from './helpers/app'
import { eachStorage } from './helpers/storages'

async function post (url: string, key: string, body = '{"amount":100}') {
  const response = await fetch(url, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body
  })
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    retryAfter: response.headers.get('retry-after'),
    body: await response.text()
  }
}

eachStorage(t, '50 concurrent duplicates run once', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 2000 })
  let runs = 0
  app.post('/payments', async () => {
    runs++
    await sleep(50)
    return { id: runs }
  })
  const base = await listen(app)

  const responses = await Promise.all(
    Array.from({ length: 50 }, () => post(`${base}/payments`, 'pay-1'))
  )

  t.equal(runs, 1)
  const statuses = responses.map((response) => response.status).sort()
  t.same(statuses, [200, ...Array(49).fill(409)])
  for (const response of responses) {
    t.equal(response.body, '{"id":1}')
  }
})

eachStorage(t, 'duplicate past lockTimeout gets 423', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 50 })
  let runs = 0
  app.post('/payments', async () => {
    runs++
    await sleep(400)
    return { id: runs }
  })
  const base = await listen(app)

  const original = post(`${base}/payments`, 'pay-2')
  await sleep(50)
  const duplicate = await post(`${base}/payments`, 'pay-2')

  t.equal(duplicate.status, 423)
  t.equal(duplicate.retryAfter, '1')
  t.equal(JSON.parse(duplicate.body).code, 'FST_IDEMPOTENCY_IN_PROGRESS')
  t.equal((await original).status, 200)
  t.equal(runs, 1)
})

eachStorage(t, 'lockedStatusCode sets the status', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 0, lockedStatusCode: 409 })
  app.post('/payments', async () => {
    await sleep(300)
    return { ok: true }
  })
  const base = await listen(app)

  const original = post(`${base}/payments`, 'pay-3')
  await sleep(50)
  const duplicate = await post(`${base}/payments`, 'pay-3')

  t.equal(duplicate.status, 409)
  t.equal(JSON.parse(duplicate.body).code, 'FST_IDEMPOTENCY_IN_PROGRESS')
  await original
})

eachStorage(t, 'duplicate waits for the original', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 1000 })
  let runs = 0
  app.post('/payments', async () => {
    runs++
    await sleep(150)
    return { id: 7 }
  })
  const base = await listen(app)

  const original = post(`${base}/payments`, 'pay-4')
  await sleep(30)
  const duplicate = await post(`${base}/payments`, 'pay-4')

  t.equal(duplicate.status, 409)
  t.equal(duplicate.replayed, 'true')
  t.equal(duplicate.body, '{"id":7}')
  t.equal((await original).status, 200)
  t.equal(runs, 1)
})

eachStorage(t, 'waiting duplicate runs after failure', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 1000 })
  let runs = 0
  app.post('/payments', async (request, reply) => {
    runs++
    await sleep(100)
    return runs === 1 ? reply.code(502).send({ error: 'gateway' }) : { id: runs }
  })
  const base = await listen(app)

  const original = post(`${base}/payments`, 'pay-5')
  await sleep(30)
  const duplicate = await post(`${base}/payments`, 'pay-5')

  t.equal((await original).status, 502)
  t.equal(duplicate.status, 200)
  t.equal(duplicate.body, '{"id":2}')
  t.equal(runs, 2)
})

eachStorage(t, 'lock false does not wait', async (t, storage) => {
  const app = await createApp(t, { storage, lock: false })
  let runs = 0
  app.post('/payments', async () => {
    runs++
    await sleep(100)
    return { id: runs }
  })
  const base = await listen(app)

  const both = await Promise.all([
    post(`${base}/payments`, 'pay-6'),
    post(`${base}/payments`, 'pay-6')
  ])
  const replay = await post(`${base}/payments`, 'pay-6')

  t.equal(runs, 2)
  t.same(both.map((response) => response.status), [200, 200])
  t.equal(replay.status, 409)
  t.equal(replay.replayed, 'true')
})

eachStorage(t, 'many keys at once stay apart', async (t, storage) => {
  const app = await createApp(t, { storage, lockTimeout: 2000 })
  const runsByKey = new Map<string, number>()
  app.post('/payments', async (request) => {
    const key = request.idempotency.key as string
    runsByKey.set(key, (runsByKey.get(key) ?? 0) + 1)
    await sleep(20)
    return { key }
  })
  const base = await listen(app)

  const keys = Array.from({ length: 20 }, (_, i) => `bulk-${i}`)
  const requests = keys.flatMap((key) => [post(`${base}/payments`, key), post(`${base}/payments`, key)])
  const responses = await Promise.all(requests)

  for (const key of keys) {
    t.equal(runsByKey.get(key), 1, key)
  }
  t.equal(responses.filter((response) => response.status === 200).length, 20)
  t.equal(responses.filter((response) => response.status === 409).length, 20)
})
