// A Fastify server in its own process, driven by bench/run.ts. It reads its
// setup from BENCH_SERVER, listens on a free port of 127.0.0.1, and sends
// that port to the parent over IPC.
import fastifyRedis from '@fastify/redis'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import type idempotencyPlugin from '../index'
import { host } from './processes'

export interface ServerSetup {
  /**
   * The compiled plugin to register, from bench/build.ts, or null to run
   * plain Fastify with the same routes.
   */
  pluginEntry: string | null
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
  /** process.hrtime() in microseconds, the clock of V8's CPU profiles. */
  monotonicMicros: number
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
  if (setup.pluginEntry !== null) {
    await registerPlugin(app, setup.pluginEntry, setup)
  }
  app.post('/payments', createPayment)
  app.post('/exempt-payments', { config: { idempotency: 'exempt' } }, createPayment)
  app.get('/payments/:id', readPayment)
  return app
}

async function registerPlugin (app: FastifyInstance, entry: string, setup: ServerSetup) {
  const idempotency = require(entry) as typeof idempotencyPlugin
  if (setup.storage === 'memory') {
    await app.register(idempotency)
    return
  }
  if (setup.redisUrl === undefined) {
    throw new Error("Invalid BENCH_SERVER: storage 'redis' needs a redisUrl")
  }
  await app.register(fastifyRedis, { url: setup.redisUrl })
  await app.register(idempotency, { storage: 'redis', keyPrefix: setup.keyPrefix })
}

function cpuMessage (): CpuMessage {
  const usage = process.cpuUsage()
  return {
    type: 'cpu',
    micros: usage.user + usage.system,
    monotonicMicros: Number(process.hrtime.bigint() / 1000n)
  }
}

async function main () {
  const setup = JSON.parse(process.env.BENCH_SERVER ?? '') as ServerSetup
  const app = await buildApp(setup)
  await app.listen({ host, port: 0 })

  process.on('message', (message: { type?: string }) => {
    if (message.type === 'cpu') {
      process.send?.(cpuMessage())
    } else if (message.type === 'stop') {
      // The load is over and nothing is stored on disk, so exit at once:
      // app.close() would race the Redis commands of requests whose
      // client has already gone. process.exit() still writes --cpu-prof.
      process.exit(0)
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
