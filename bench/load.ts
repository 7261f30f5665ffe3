import { randomUUID } from 'node:crypto'
import { createHistogram } from 'node:perf_hooks'
import autocannon from 'autocannon'
import { host } from './processes'

export const paymentBody = '{"amount":100,"currency":"eur"}'

/** The requests that one run sends, the same to plain Fastify and the plugin. */
export interface Traffic {
  method: 'GET' | 'POST'
  path: string
  /** Returns the idempotency key of the next request, or null to send none. */
  nextKey: (() => string) | null
}

export interface LoadResult {
  /** Completed requests per second. */
  rps: number
  requests: number
  seconds: number
  /** Latency percentiles in milliseconds, at microsecond resolution. */
  p50: number
  p99: number
  errors: number
  /** Responses by status code. */
  statuses: Record<string, number>
}

export const connections = 10

/** Returns a function that returns a new random key on every call. */
export function uniqueKeys (): () => string {
  return () => randomUUID()
}

/** Returns a function that returns `keys` in turn, starting over after the last. */
export function cycledKeys (keys: string[]): () => string {
  let next = 0
  return () => {
    const key = keys[next] as string
    next = (next + 1) % keys.length
    return key
  }
}

function requestOf (traffic: Traffic): autocannon.Request {
  const request: autocannon.Request = { method: traffic.method, path: traffic.path }
  if (traffic.method === 'POST') {
    request.headers = { 'content-type': 'application/json' }
    request.body = paymentBody
  }
  const nextKey = traffic.nextKey
  if (nextKey !== null) {
    // autocannon copies the headers object for each request before this runs.
    request.setupRequest = (built) => {
      (built.headers as Record<string, string>)['idempotency-key'] = nextKey()
      return built
    }
  }
  return request
}

/** How long a load runs: for a number of seconds, or a number of requests. */
export type LoadLength = { seconds: number } | { requests: number }

/**
 * Sends `traffic` to the server on `port` over `connections` keep-alive
 * connections, one request at a time on each.
 */
export function runLoad (port: number, traffic: Traffic, length: LoadLength): Promise<LoadResult> {
  // Latencies in microseconds: autocannon's own histogram counts whole ms.
  const latencies = createHistogram()
  return new Promise((resolve, reject) => {
    const instance = autocannon({
      url: `http://${host}:${port}`,
      connections,
      ...('seconds' in length ? { duration: length.seconds } : { amount: length.requests }),
      requests: [requestOf(traffic)]
    }, (error, result) => {
      if (error !== null) {
        reject(error)
        return
      }
      resolve(summarize(result, latencies))
    })
    instance.on('response', (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
      latencies.record(Math.max(1, Math.round(responseTime * 1000)))
    })
  })
}

function summarize (result: autocannon.Result, latencies: ReturnType<typeof createHistogram>): LoadResult {
  const statuses: Record<string, number> = {}
  for (const [status, { count }] of Object.entries(result.statusCodeStats)) {
    statuses[status] = count
  }
  return {
    rps: result.requests.total / result.duration,
    requests: result.requests.total,
    seconds: result.duration,
    p50: latencies.count === 0 ? 0 : latencies.percentile(50) / 1000,
    p99: latencies.count === 0 ? 0 : latencies.percentile(99) / 1000,
    errors: result.errors,
    statuses
  }
}
