import t from 'tap'
import { createApp } from './helpers/app'
import { eachStorage } from './helpers/storages'

const key = { 'idempotency-key': 'payment-1' }

function countingRoute (app: Awaited<ReturnType<typeof createApp>>) {
  const counter = { runs: 0 }
  app.post('/payments', async (request) => {
    counter.runs++
    return { run: counter.runs }
  })
  return counter
}

eachStorage(t, 'changed JSON body gets 422', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)

  await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 100 } })
  const changed = await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 999 } })

  t.equal(changed.statusCode, 422)
  t.equal(changed.json().code, 'FST_IDEMPOTENCY_PAYLOAD_MISMATCH')
  t.equal(counter.runs, 1)
})

eachStorage(t, '422 leaves the record intact', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)

  await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 100 } })
  await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 999 } })
  const retry = await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 100 } })

  t.equal(retry.statusCode, 409)
  t.same(retry.json(), { run: 1 })
  t.equal(counter.runs, 1)
})

eachStorage(t, 'exact bytes count, not parsed value', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)
  const headers = { ...key, 'content-type': 'application/json' }

  await app.inject({ method: 'POST', url: '/payments', headers, payload: '{"amount":100}' })
  const reformatted = await app.inject({ method: 'POST', url: '/payments', headers, payload: '{ "amount": 100 }' })

  t.equal(reformatted.statusCode, 422)
  t.equal(counter.runs, 1)
})

eachStorage(t, 'query string counts', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)

  await app.inject({ method: 'POST', url: '/payments?currency=eur', headers: key })
  const same = await app.inject({ method: 'POST', url: '/payments?currency=eur', headers: key })
  const changed = await app.inject({ method: 'POST', url: '/payments?currency=usd', headers: key })

  t.equal(same.statusCode, 409)
  t.equal(changed.statusCode, 422)
  t.equal(counter.runs, 1)
})

eachStorage(t, 'form and binary bodies count', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (request, body, done) => {
    done(null, body)
  })
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (request, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(body as string)))
  })
  const counter = countingRoute(app)
  const binary = { ...key, 'content-type': 'application/octet-stream' }
  const form = { 'idempotency-key': 'form-1', 'content-type': 'application/x-www-form-urlencoded' }

  await app.inject({ method: 'POST', url: '/payments', headers: binary, payload: Buffer.from([0, 1, 2, 255]) })
  const sameBinary = await app.inject({ method: 'POST', url: '/payments', headers: binary, payload: Buffer.from([0, 1, 2, 255]) })
  const otherBinary = await app.inject({ method: 'POST', url: '/payments', headers: binary, payload: Buffer.from([0, 1, 2, 254]) })
  await app.inject({ method: 'POST', url: '/payments', headers: form, payload: 'amount=1' })
  const otherForm = await app.inject({ method: 'POST', url: '/payments', headers: form, payload: 'amount=2' })

  t.equal(sameBinary.statusCode, 409)
  t.equal(otherBinary.statusCode, 422)
  t.equal(otherForm.statusCode, 422)
  t.equal(counter.runs, 2)
})

eachStorage(t, 'fingerprint false replays anyway', async (t, storage) => {
  const app = await createApp(t, { storage, fingerprint: false })
  const counter = countingRoute(app)

  await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 100 } })
  const changed = await app.inject({ method: 'POST', url: '/payments', headers: key, payload: { amount: 999 } })

  t.equal(changed.statusCode, 409)
  t.same(changed.json(), { run: 1 })
  t.equal(counter.runs, 1)
})

eachStorage(t, 'broken JSON claims nothing', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)
  const headers = { ...key, 'content-type': 'application/json' }

  const broken = await app.inject({ method: 'POST', url: '/payments', headers, payload: '{"amount":' })
  const fixed = await app.inject({ method: 'POST', url: '/payments', headers, payload: '{"amount":1}' })

  t.equal(broken.statusCode, 400)
  t.equal(broken.json().code, 'FST_ERR_CTP_INVALID_JSON_BODY')
  t.equal(fixed.statusCode, 200)
  t.equal(counter.runs, 1)
})

eachStorage(t, 'body over bodyLimit claims nothing', async (t, storage) => {
  const app = await createApp(t, { storage }, { bodyLimit: 16 })
  const counter = countingRoute(app)
  const headers = { ...key, 'content-type': 'application/json' }

  const tooLarge = await app.inject({ method: 'POST', url: '/payments', headers, payload: JSON.stringify({ note: 'x'.repeat(64) }) })
  const small = await app.inject({ method: 'POST', url: '/payments', headers, payload: '{"a":1}' })

  t.equal(tooLarge.statusCode, 413)
  t.equal(small.statusCode, 200)
  t.equal(counter.runs, 1)
})
