import { setTimeout as sleep } from 'node:timers/promises'
import { buildServer, type Stats } from './server'

/** The parts of a JSON response body that the demo prints or checks. */
interface ResponseBody {
  id?: string
  code?: string
  amount?: number
  currency?: string
}

interface Result {
  status: number
  replayed: boolean
  retryAfter: string | null
  body: ResponseBody
}

interface Row {
  step: string
  request: string
  status: string
  replayed: string
  note: string
}

interface RequestOptions {
  key?: string
  body?: unknown
}

const columns: Array<{ title: string, width: number }> = [
  { title: 'step', width: 4 },
  { title: 'request', width: 24 },
  { title: 'status', width: 13 },
  { title: 'replayed', width: 8 },
  { title: 'runs', width: 4 },
  { title: 'note', width: 0 }
]

const requestTimeout = 5000
const duplicateCount = 20
const payment = { amount: 20, currency: 'EUR' }

/**
 * Sends the demo's requests to one server over HTTP, prints a table row per
 * step and collects every check that failed.
 */
class DemoClient {
  readonly failures: string[] = []
  paymentRequests = 0

  constructor (readonly baseUrl: string) {}

  async send (method: string, path: string, options: RequestOptions = {}): Promise<Result> {
    const headers: Record<string, string> = {}
    if (options.key !== undefined) {
      headers['idempotency-key'] = options.key
    }
    if (options.body !== undefined) {
      headers['content-type'] = 'application/json'
    }
    if (method === 'POST' && path === '/payments') {
      this.paymentRequests++
    }

    const response = await fetch(this.baseUrl + path, {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      signal: AbortSignal.timeout(requestTimeout)
    })
    return {
      status: response.status,
      replayed: response.headers.get('idempotent-replayed') === 'true',
      retryAfter: response.headers.get('retry-after'),
      body: await response.json() as ResponseBody
    }
  }

  async stats (): Promise<Stats> {
    const response = await fetch(`${this.baseUrl}/stats`, {
      signal: AbortSignal.timeout(requestTimeout)
    })
    return await response.json() as Stats
  }

  expect (step: string, what: string, actual: unknown, expected: unknown) {
    if (actual !== expected) {
      this.failures.push(`step ${step}: expected ${what} ${String(expected)}, received ${String(actual)}`)
    }
  }

  /** Prints a row, with the handler runs read from `GET /stats` now. */
  async printRow (row: Row) {
    const stats = await this.stats()
    const runs = `${stats.paymentRuns}/${stats.refundRuns}`
    printCells([row.step, row.request, row.status, row.replayed, runs, row.note])
  }

  async printResult (step: string, request: string, result: Result, note: string) {
    await this.printRow({
      step,
      request,
      status: String(result.status),
      replayed: result.replayed ? 'yes' : 'no',
      note
    })
  }
}

function printCells (cells: string[]) {
  const padded = cells.map((cell, i) => cell.padEnd(columns[i]?.width ?? 0))
  console.log(padded.join('  ').trimEnd())
}

function printHeader () {
  printCells(columns.map((column) => column.title))
  printCells(columns.map((column) => '-'.repeat(column.width || column.title.length)))
}

function describeRequest (method: string, path: string, key?: string): string {
  if (key !== undefined) {
    return `${method} ${path} key=${key}`
  }
  return method === 'GET' ? `${method} ${path}` : `${method} ${path} (no key)`
}

async function createPayment (client: DemoClient): Promise<string> {
  const result = await client.send('POST', '/payments', { key: 'pay-1', body: payment })
  const id = result.body.id ?? '?'

  client.expect('1', 'status', result.status, 201)
  client.expect('1', 'replayed', result.replayed, false)
  await client.printResult('1', describeRequest('POST', '/payments', 'pay-1'), result, `created ${id}`)
  return id
}

async function retryPayment (client: DemoClient, paymentId: string) {
  const result = await client.send('POST', '/payments', { key: 'pay-1', body: payment })

  client.expect('2', 'status', result.status, 409)
  client.expect('2', 'replayed', result.replayed, true)
  client.expect('2', 'payment id', result.body.id, paymentId)
  const note = `stored ${result.body.id ?? '?'} sent again`
  await client.printResult('2', describeRequest('POST', '/payments', 'pay-1'), result, note)
}

async function sendConcurrentDuplicates (client: DemoClient): Promise<string> {
  const before = await client.stats()
  const results = await Promise.all(Array.from({ length: duplicateCount }, async () =>
    await client.send('POST', '/payments', { key: 'pay-2', body: payment })
  ))
  const after = await client.stats()

  const created = results.filter((result) => result.status === 201).length
  const replayed = results.filter((result) => result.replayed).length
  const ids = new Set(results.map((result) => result.body.id))
  client.expect('3', '201 responses', created, 1)
  client.expect('3', '409 responses', countStatus(results, 409), duplicateCount - 1)
  client.expect('3', 'replayed responses', replayed, duplicateCount - 1)
  client.expect('3', 'distinct payment ids', ids.size, 1)
  client.expect('3', 'new handler runs', after.paymentRuns - before.paymentRuns, 1)

  await client.printRow({
    step: '3',
    request: describeRequest('POST', '/payments', 'pay-2'),
    status: summarizeStatuses(results),
    replayed: `${replayed} of ${results.length}`,
    note: `${results.length} at once, all got ${[...ids].join(', ')}`
  })
  return results[0]?.body.id ?? '?'
}

function countStatus (results: Result[], status: number): number {
  return results.filter((result) => result.status === status).length
}

/** Formats statuses as counts in ascending order, such as `1×201, 19×409`. */
function summarizeStatuses (results: Result[]): string {
  const statuses = [...new Set(results.map((result) => result.status))].sort((a, b) => a - b)
  return statuses.map((status) => `${countStatus(results, status)}×${status}`).join(', ')
}

async function reuseKeyWithOtherBody (client: DemoClient) {
  const body = { ...payment, amount: 30 }
  const result = await client.send('POST', '/payments', { key: 'pay-1', body })

  client.expect('4', 'status', result.status, 422)
  client.expect('4', 'code', result.body.code, 'FST_IDEMPOTENCY_PAYLOAD_MISMATCH')
  await client.printResult('4', describeRequest('POST', '/payments', 'pay-1'), result, result.body.code ?? '')
}

async function sendWithoutKey (client: DemoClient) {
  const result = await client.send('POST', '/payments', { body: payment })

  client.expect('5', 'status', result.status, 400)
  client.expect('5', 'code', result.body.code, 'FST_IDEMPOTENCY_KEY_MISSING')
  await client.printResult('5', describeRequest('POST', '/payments'), result, result.body.code ?? '')
}

/**
 * Sends a slow payment and a duplicate while it still runs, which gets 423,
 * then retries after the original finished, which gets the stored payment.
 */
async function retryDuringSlowPayment (client: DemoClient) {
  const body = { ...payment, slow: true }
  const request = describeRequest('POST', '/payments', 'pay-3')
  const { paymentRuns } = await client.stats()
  const startedAt = Date.now()
  const original = client.send('POST', '/payments', { key: 'pay-3', body })
  await waitForPaymentRuns(client, paymentRuns + 1)

  const duplicate = await client.send('POST', '/payments', { key: 'pay-3', body })
  client.expect('6a', 'status', duplicate.status, 423)
  client.expect('6a', 'code', duplicate.body.code, 'FST_IDEMPOTENCY_IN_PROGRESS')
  client.expect('6a', 'retry-after', duplicate.retryAfter !== null, true)
  await client.printResult('6a', request, duplicate, `retry-after: ${duplicate.retryAfter ?? 'missing'}`)

  const first = await original
  const seconds = ((Date.now() - startedAt) / 1000).toFixed(1)
  client.expect('6b', 'status', first.status, 201)
  await client.printResult('6b', request, first, `original: ${first.body.id ?? '?'} after ${seconds} s`)

  const retry = await client.send('POST', '/payments', { key: 'pay-3', body })
  client.expect('6c', 'status', retry.status, 409)
  client.expect('6c', 'replayed', retry.replayed, true)
  client.expect('6c', 'payment id', retry.body.id, first.body.id)
  await client.printResult('6c', request, retry, `stored ${retry.body.id ?? '?'} sent again`)
}

/** Polls `GET /stats` until the payment handler has started `runs` times. */
async function waitForPaymentRuns (client: DemoClient, runs: number) {
  const deadline = Date.now() + requestTimeout
  while ((await client.stats()).paymentRuns < runs) {
    if (Date.now() > deadline) {
      throw new Error(`The payment handler did not start within ${requestTimeout} ms`)
    }
    await sleep(10)
  }
}

/**
 * Refunds a payment, retries the refund, then reuses its key to refund
 * another payment. The manual route's handler runs every time.
 */
async function refundTwice (client: DemoClient, paymentId: string, otherPaymentId: string) {
  const request = describeRequest('POST', '/refunds', 'ref-1')
  const body = { paymentId }

  const first = await client.send('POST', '/refunds', { key: 'ref-1', body })
  client.expect('7a', 'status', first.status, 201)
  await client.printResult('7a', request, first, `issued ${first.body.id ?? '?'} for ${paymentId}`)

  const retry = await client.send('POST', '/refunds', { key: 'ref-1', body })
  const { refundsIssued } = await client.stats()
  client.expect('7b', 'status', retry.status, 200)
  client.expect('7b', 'replayed', retry.replayed, false)
  client.expect('7b', 'refund id', retry.body.id, first.body.id)
  client.expect('7b', 'refunds issued', refundsIssued, 1)
  const note = `handler ran, sent stored ${retry.body.id ?? '?'}`
  await client.printResult('7b', request, retry, note)

  const other = await client.send('POST', '/refunds', { key: 'ref-1', body: { paymentId: otherPaymentId } })
  client.expect('7c', 'status', other.status, 422)
  client.expect('7c', 'code', other.body.code, 'FST_IDEMPOTENCY_PAYLOAD_MISMATCH')
  await client.printResult('7c', request, other, other.body.code ?? '')
}

async function readPayment (client: DemoClient, paymentId: string) {
  const path = `/payments/${paymentId}`
  const result = await client.send('GET', path)

  client.expect('8', 'status', result.status, 200)
  client.expect('8', 'payment id', result.body.id, paymentId)
  const note = `${paymentId}: ${result.body.amount ?? '?'} ${result.body.currency ?? '?'}`
  await client.printResult('8', describeRequest('GET', path), result, note)
}

async function runSteps (client: DemoClient) {
  printHeader()
  const paymentId = await createPayment(client)
  await retryPayment(client, paymentId)
  const otherPaymentId = await sendConcurrentDuplicates(client)
  await reuseKeyWithOtherBody(client)
  await sendWithoutKey(client)
  await retryDuringSlowPayment(client)
  await refundTwice(client, paymentId, otherPaymentId)
  await readPayment(client, paymentId)
  console.log('\nruns: payment/refund handler runs so far, from GET /stats')
}

/**
 * Checks the final handler counts: one payment run per key that created a
 * payment (pay-1, pay-2, pay-3), and one refund issued in three refund runs.
 */
function checkTotals (client: DemoClient, stats: Stats) {
  client.expect('end', 'payment handler runs', stats.paymentRuns, 3)
  client.expect('end', 'refund handler runs', stats.refundRuns, 3)
  client.expect('end', 'refunds issued', stats.refundsIssued, 1)
}

function printVerdict (client: DemoClient, stats: Stats) {
  const counts = `payment handler ran ${stats.paymentRuns} times for ` +
    `${client.paymentRequests} requests, ${stats.refundsIssued} refund ` +
    `issued in ${stats.refundRuns} runs`
  if (client.failures.length === 0) {
    console.log(`\nOK: ${counts}: no duplicate charge`)
    return
  }

  console.log(`\nFAILED: ${counts}`)
  for (const failure of client.failures) {
    console.log(`  ${failure}`)
  }
  process.exitCode = 1
}

async function main () {
  const app = buildServer()
  const baseUrl = await app.listen({ host: '127.0.0.1', port: 0 })
  console.log(`fastify-idempotency-key demo: server at ${baseUrl}\n`)

  const client = new DemoClient(baseUrl)
  let stats: Stats
  try {
    await runSteps(client)
    stats = await client.stats()
  } finally {
    await app.close()
  }

  checkTotals(client, stats)
  printVerdict(client, stats)
}

main().catch((err) => {
  console.error('The demo failed:', err)
  process.exitCode = 1
})
