import t from 'tap'
import { createApp } from './helpers/app'
import { eachStorage } from './helpers/storages'

const key = { 'idempotency-key': 'shared-key' }

eachStorage(t, 'one key on two routes', async (t, storage) => {
  const app = await createApp(t, { storage })
  let runs = 0
  app.post('/orders', async () => ({ route: 'orders', run: ++runs }))
  app.put('/orders', async () => ({ route: 'orders put', run: ++runs }))
  app.post('/refunds', async () => ({ route: 'refunds', run: ++runs }))

  const orders = await app.inject({ method: 'POST', url: '/orders', headers: key, payload: { a: 1 } })
  const put = await app.inject({ method: 'PUT', url: '/orders', headers: key, payload: { a: 2 } })
  const refunds = await app.inject({ method: 'POST', url: '/refunds', headers: key, payload: { b: 2 } })

  t.equal(orders.statusCode, 200)
  t.equal(put.statusCode, 200)
  t.equal(refunds.statusCode, 200)
  t.equal(runs, 3)
})

eachStorage(t, 'two callers never collide', async (t, storage) => {
  const app = await createApp(t, { storage })
  app.post('/orders', async (request) => ({ caller: request.headers.authorization }))

  const alice = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, authorization: 'Bearer alice' } })
  const bob = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, authorization: 'Bearer bob' } })

  t.equal(alice.statusCode, 200)
  t.equal(bob.statusCode, 200)
  t.same(bob.json(), { caller: 'Bearer bob' })
})

eachStorage(t, 'custom encoder scopes by user', async (t, storage) => {
  const app = await createApp(t, {
    storage,
    encoder: (request, key) => `${String(request.headers['x-user-id'])}:${request.method}:${request.url}:${key}`
  })
  let runs = 0
  app.post('/orders', async () => ({ run: ++runs }))

  await app.inject({ method: 'POST', url: '/orders', headers: { ...key, 'x-user-id': '1' } })
  const sameUser = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, 'x-user-id': '1' } })
  const otherUser = await app.inject({ method: 'POST', url: '/orders', headers: { ...key, 'x-user-id': '2' } })

  t.equal(sameUser.statusCode, 409)
  t.equal(otherUser.statusCode, 200)
  t.equal(runs, 2)
})
