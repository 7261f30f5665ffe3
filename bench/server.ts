// A Fastify server in its own process, driven by bench/run.ts. It reads its
// setup from BENCH_SERVER, listens on a free port of 127.0.0.1, and sends
// that port to the parent over IPC.
import fastifyRedis from '@fastify/redis'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import idempotency from '../index'
import { host } from './processes'

export interface ServerSetup {
  /** Register the plugin, or run plain Fastify with the same routes. */
  plugin: boolean
  storage: 'memory' | 'redis'
  redisUrl?: string
  /** With Redis storage: prefix of every key the plugin writes. */
  keyPrefix?: string
}

export interface ListeningMessage {
  type: 'listening'
  port: number
}

export interface CpuMessage {
  type: 'cpu'
  /** CPU time of this process so far, user plus system, in microseconds. */
  micros: number
}

interface PaymentBody {
  amount: number
  currency: string
}

let paymentCount = 0

/** Handles every payment route: the plugin is the only difference. */
async function createPayment (request: FastifyRequest<{ Body: PaymentBody }>, reply: FastifyReply) {
  paymentCount++
  reply.code(201)
  return { id: paymentCount, amount: request.body.amount, currency: request.body.currency }
}

async function readPayment (request: FastifyRequest<{ Params: { id: string } }>) {
  return { id: Number(request.params.id), amount: 100, currency: 'eur' }
}

async function buildApp (setup: ServerSetup): Promise<FastifyInstance> {
  const app = Fastify({ logger: false })
  if (setup.plugin) {
    await registerPlugin(app, setup)
  }
  app.post('/payments', createPayment)
  app.post('/exempt-payments', { config: { idempotency: 'exempt' } }, createPayment)
  app.get('/payments/:id', readPayment)
  return app
}

async function registerPlugin (app: FastifyInstance, setup: ServerSetup) {
  if (setup.storage === 'memory') {
    await app.register(idempotency)
    return
  }
  if (setup.redisUrl === undefined) {
    throw new Error('BENCH_SERVER sets storage "redis" but no redisUrl')
  }
  await app.register(fastifyRedis, { url: setup.redisUrl })
  await app.register(idempotency, { storage: 'redis', keyPrefix: setup.keyPrefix })
}

function cpuMicros (): number {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}

async function main () {
  const setup = JSON.parse(process.env.BENCH_SERVER ?? '') as ServerSetup
  const app = await buildApp(setup)
  await app.listen({ host, port: 0 })

  process.on('message', (message: { type?: string }) => {
    if (message.type === 'cpu') {
      process.send?.({ type: 'cpu', micros: cpuMicros() } satisfies CpuMessage)
    } else if (message.type === 'stop') {
      app.close().finally(() => process.exit(0))
    }
  })
  // An orphan would hold its port and CPU, so exit with the parent.
  process.on('disconnect', () => process.exit(0))
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  process.send?.({ type: 'listening', port } satisfies ListeningMessage)
}

main().catch((error) => {
  console.error('bench server failed to start:', error)
  process.exit(1)
})
