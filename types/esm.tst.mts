// Type tests for an ESM project: the default import is the plugin itself.
import Fastify from 'fastify'
import idempotency, { MemoryStorage, idempotency as named } from 'fastify-idempotency-key'

const app = Fastify()
await app.register(idempotency, { mode: 'required', storage: new MemoryStorage() })
await app.register(named, { lockTimeout: 100 })
// @ts-expect-error manual is a route mode, not a plugin mode
await app.register(idempotency, { mode: 'manual' })

app.post('/orders', async (request) => ({ key: request.idempotency.key }))
