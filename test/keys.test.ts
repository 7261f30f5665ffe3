import http from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { createApp, listen } from './helpers/app'

async function appWithRoute (t: Test) {
  const app = await createApp(t)
  const seen: Array<string | null> = []
  app.post('/orders', async (request) => {
    seen.push(request.idempotency.key)
    return { key: request.idempotency.key }
  })
  return { app, seen }
}

t.test('missing key gets 400', async (t) => {
  const { app, seen } = await appWithRoute(t)

  const response = await app.inject({ method: 'POST', url: '/orders' })

  t.equal(response.statusCode, 400)
  t.equal(response.json().code, 'FST_IDEMPOTENCY_KEY_MISSING')
  t.match(response.json().message, /idempotency-key/)
  t.same(seen, [])
})

const invalidKeys: Array<[string, string]> = [
  ['empty', ''],
  ['empty quoted', '""'],
  ['too long', 'k'.repeat(256)],
  ['with a space', 'order 1'],
  ['with a tab', 'order\t1'],
  ['latin-1', 'ordér-1']
]

for (const [name, value] of invalidKeys) {
  t.test(`${name} key gets 400`, async (t) => {
    const { app, seen } = await appWithRoute(t)

    const response = await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': value } })

    t.equal(response.statusCode, 400)
    t.equal(response.json().code, 'FST_IDEMPOTENCY_KEY_INVALID')
    t.same(seen, [])
  })
}

t.test('255 character key accepted', async (t) => {
  const { app } = await appWithRoute(t)
  const key = 'k'.repeat(255)

  const response = await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': key } })

  t.equal(response.statusCode, 200)
  t.same(response.json(), { key })
})

t.test('quoted key is unquoted', async (t) => {
  const { app, seen } = await appWithRoute(t)

  await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': '"abc"' } })
  const plain = await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': 'abc' } })

  t.same(seen, ['abc'])
  t.equal(plain.statusCode, 409)
})

// inject() cannot send one header twice, so this test speaks raw HTTP.
function sendRawRequest (port: number, lines: string[]): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const request = http.request({ port, host: '127.0.0.1', method: 'POST', path: '/orders' })
    for (const line of lines) {
      const [name, value] = line.split(': ') as [string, string]
      request.appendHeader(name, value)
    }
    request.on('response', (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk) => { body += chunk })
      response.on('end', () => resolve({ status: response.statusCode as number, body }))
    })
    request.on('error', reject)
    request.end()
  })
}

t.test('key in two header lines gets 400', async (t) => {
  const { app, seen } = await appWithRoute(t)
  await listen(app)
  const port = (app.server.address() as AddressInfo).port

  const response = await sendRawRequest(port, ['Idempotency-Key: a', 'idempotency-key: b'])

  t.equal(response.status, 400)
  t.equal(JSON.parse(response.body).code, 'FST_IDEMPOTENCY_KEY_INVALID')
  t.match(JSON.parse(response.body).message, /one header line/)
  t.same(seen, [])
})

t.test('custom header name', async (t) => {
  const app = await createApp(t, { header: 'X-Request-Id' })
  app.post('/orders', async (request) => ({ key: request.idempotency.key }))

  const missing = await app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': 'a' } })
  const sent = await app.inject({ method: 'POST', url: '/orders', headers: { 'x-request-id': 'a' } })

  t.equal(missing.statusCode, 400)
  t.match(missing.json().message, /x-request-id/)
  t.same(sent.json(), { key: 'a' })
})
