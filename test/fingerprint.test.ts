import http from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import t from 'tap'
import { createApp, listen } from './helpers/app'
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

/** Sends a JSON body over HTTP in separate writes, so it arrives in several chunks. */
async function postInChunks (base: string, chunks: string[]) {
  const url = new URL(base)
  const response = new Promise<{ status: number, body: string }>((resolve, reject) => {
    const request = http.request({
      host: url.hostname,
      port: url.port,
      method: 'POST',
      path: '/payments',
      headers: { ...key, 'content-type': 'application/json' }
    }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (text: string) => { body += text })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    request.on('error', reject)
    sendChunks(request, chunks).catch(reject)
  })
  return response
}

async function sendChunks (request: http.ClientRequest, chunks: string[]) {
  for (const chunk of chunks) {
    request.write(chunk)
    await sleep(20)
  }
  request.end()
}

eachStorage(t, 'chunked body has one fingerprint', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)
  const base = await listen(app)
  const note = 'x'.repeat(100_000)
  const body = `{"note":"${note}","amount":100}`

  // The first request sends the body in one chunk, the retries in three.
  const first = await app.inject({ method: 'POST', url: '/payments', headers: key, payload: JSON.parse(body) })
  const same = await postInChunks(base, ['{"note":"', `${note}","amount`, '":100}'])
  const changed = await postInChunks(base, ['{"note":"', `${note}","amount`, '":101}'])

  t.equal(first.statusCode, 200)
  t.equal(same.status, 409)
  t.same(JSON.parse(same.body), { run: 1 })
  t.equal(changed.status, 422)
  t.equal(counter.runs, 1)
})

/** Sends a POST without a body, framed as chunked or with content-length 0. */
function postEmpty (base: string, framing: 'chunked' | 'length') {
  const url = new URL(base)
  // Fastify rejects a chunked body without a content type with 415.
  const headers: Record<string, string> = { ...key, 'content-type': 'text/plain' }
  if (framing === 'length') {
    headers['content-length'] = '0'
  } else {
    // The body is then only the empty last chunk.
    headers['transfer-encoding'] = 'chunked'
  }
  return new Promise<number>((resolve, reject) => {
    const options = { host: url.hostname, port: url.port, method: 'POST', path: '/payments', headers }
    const request = http.request(options, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    request.on('error', reject)
    request.end()
  })
}

eachStorage(t, 'empty chunked body is no body', async (t, storage) => {
  const app = await createApp(t, { storage })
  const counter = countingRoute(app)
  const base = await listen(app)

  const first = await postEmpty(base, 'length')
  const chunked = await postEmpty(base, 'chunked')

  t.equal(first, 200)
  t.equal(chunked, 409)
  t.equal(counter.runs, 1)
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
