import { setTimeout as sleep } from 'node:timers/promises'
import Fastify, {
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifyServerOptions
} from 'fastify'
import idempotency, { PayloadMismatchError, type StoredResponse } from '../index'

/** A payment as the example API stores and returns it. */
export interface Payment {
  id: string
  amount: number
  currency: string
}

/** A full refund of one payment. */
export interface Refund {
  id: string
  paymentId: string
  amount: number
  currency: string
}

/** Handler runs counted by the example API, as `GET /stats` returns them. */
export interface Stats {
  paymentRuns: number
  refundRuns: number
  refundsIssued: number
}

interface PaymentBody {
  amount: number
  currency: string
  slow?: boolean
}

interface RefundBody {
  paymentId: string
}

// A real charge calls a payment provider, so even the fast path takes time,
// which lets concurrent duplicates arrive while the first is still running.
const chargeDelay = 20
const slowChargeDelay = 1500

const paymentBodySchema = {
  type: 'object',
  required: ['amount', 'currency'],
  additionalProperties: false,
  properties: {
    amount: { type: 'number', exclusiveMinimum: 0 },
    currency: { type: 'string', pattern: '^[A-Z]{3}$' },
    slow: { type: 'boolean' }
  }
}

const refundBodySchema = {
  type: 'object',
  required: ['paymentId'],
  additionalProperties: false,
  properties: {
    paymentId: { type: 'string', minLength: 1 }
  }
}

/**
 * Builds the example payments API with the plugin and its default memory
 * storage. The app is not listening yet: call `listen()` or `inject()`.
 */
export function buildServer (options: FastifyServerOptions = {}): FastifyInstance {
  const app = Fastify(options)

  // A duplicate waits up to lockTimeout for its original, then gets 423.
  // 500 ms (the default is 100) gives the 20 ms charge a wide margin, and
  // the 1.5 s slow charge still outlasts it.
  app.register(idempotency, { lockTimeout: 500 })

  // A route added right after a register() that is not awaited misses the
  // plugin's onRoute hook and goes unchecked. A plugin registered after it
  // loads later, so its routes get the hook.
  app.register(paymentsApi)
  return app
}

async function paymentsApi (app: FastifyInstance) {
  const payments = new Map<string, Payment>()
  const refunds = new Map<string, Refund>()
  const stats: Stats = { paymentRuns: 0, refundRuns: 0, refundsIssued: 0 }
  let paymentCount = 0

  app.post<{ Body: PaymentBody }>('/payments', {
    config: { idempotency: 'required' },
    schema: { body: paymentBodySchema }
  }, async function createPayment (request, reply) {
    stats.paymentRuns++
    const { amount, currency, slow } = request.body
    // The id is taken before the charge, so concurrent charges get distinct ids.
    const id = `pay_${++paymentCount}`
    await sleep(slow === true ? slowChargeDelay : chargeDelay)

    const payment = { id, amount, currency }
    payments.set(payment.id, payment)
    request.log.info({ paymentId: payment.id, idempotencyKey: request.idempotency.key }, 'payment created')
    return reply.code(201).send(payment)
  })

  app.get<{ Params: { id: string } }>('/payments/:id', async function getPayment (request, reply) {
    const payment = payments.get(request.params.id)
    if (payment === undefined) {
      return reply.code(404).send({ message: `Payment ${request.params.id} not found` })
    }
    return payment
  })

  app.post<{ Body: RefundBody }>('/refunds', {
    config: { idempotency: 'manual' },
    schema: { body: refundBodySchema }
  }, async function createRefund (request, reply) {
    stats.refundRuns++
    return sendRefund(request, reply)
  })

  app.get('/stats', async function getStats () {
    return stats
  })

  /**
   * Sends the refund stored for this key, or issues a new one. A manual route
   * runs on every retry, so this handler itself must not refund twice.
   */
  async function sendRefund (request: FastifyRequest<{ Body: RefundBody }>, reply: FastifyReply) {
    const { exists, response } = request.idempotency
    if (exists && response !== null) {
      return sendStoredRefund(request, reply, response)
    }

    const payment = payments.get(request.body.paymentId)
    if (payment === undefined) {
      return reply.code(404).send({ message: `Payment ${request.body.paymentId} not found` })
    }
    const refund = {
      id: `re_${refunds.size + 1}`,
      paymentId: payment.id,
      amount: payment.amount,
      currency: payment.currency
    }
    refunds.set(refund.id, refund)
    stats.refundsIssued++
    request.log.info({ refundId: refund.id, idempotencyKey: request.idempotency.key }, 'refund issued')
    return reply.code(201).send(refund)
  }
}

/**
 * Sends the refund stored for this key with status 200. The plugin skips its
 * payload check on manual routes, so a key reused to refund another payment
 * is rejected here with the same 422 error.
 */
function sendStoredRefund (
  request: FastifyRequest<{ Body: RefundBody }>,
  reply: FastifyReply,
  response: StoredResponse
) {
  const stored = JSON.parse(String(response.body)) as Refund
  if (stored.paymentId !== request.body.paymentId) {
    throw new PayloadMismatchError()
  }
  return reply.code(200).headers(response.headers).send(response.body)
}

function readPort (): number {
  const value = process.env.PORT ?? '3000'
  const port = Number(value)
  if (!/^\d+$/.test(value) || port > 65535) {
    throw new RangeError(`Invalid PORT ${JSON.stringify(value)}: expected an integer from 0 to 65535`)
  }
  return port
}

async function start () {
  const port = readPort()
  const app = buildServer({ logger: true })

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      app.log.info({ signal }, 'closing the server')
      app.close().catch((err) => app.log.error({ err }, 'closing the server failed'))
    })
  }

  await app.listen({ host: '127.0.0.1', port })
}

// Listen only when run as `tsx example/server.ts`, not when imported.
if (require.main === module) {
  start().catch((err) => {
    console.error(err)
    process.exitCode = 1
  })
}
