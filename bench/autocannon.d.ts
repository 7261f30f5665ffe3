// Types for the parts of autocannon 9 that the bench uses, because the
// package ships no declarations of its own.
declare module 'autocannon' {
  import type { EventEmitter } from 'node:events'

  namespace autocannon {
    interface Request {
      method?: string
      path?: string
      headers?: Record<string, string>
      body?: string | Buffer
      setupRequest?: (request: Request, context: object) => Request
    }

    interface Options {
      url: string
      connections?: number
      pipelining?: number
      /** Seconds. */
      duration?: number
      /** Requests to send, in place of a duration. */
      amount?: number
      method?: string
      headers?: Record<string, string>
      body?: string | Buffer
      requests?: Request[]
    }

    interface Histogram {
      average: number
      stddev: number
      min: number
      max: number
      total: number
      p50: number
      p99: number
    }

    interface Result {
      requests: Histogram
      latency: Histogram
      /** Seconds. */
      duration: number
      errors: number
      timeouts: number
      non2xx: number
      statusCodeStats: Record<string, { count: number }>
    }

    interface Instance extends EventEmitter {
      stop (): void
    }
  }

  function autocannon (
    options: autocannon.Options,
    callback: (error: Error | null, result: autocannon.Result) => void
  ): autocannon.Instance

  export = autocannon
}
