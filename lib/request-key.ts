import { createHash, type Hash } from 'node:crypto'
import type { Readable } from 'node:stream'
import type { FastifyRequest } from 'fastify'
import { KeyInvalidError } from './errors'

const maxKeyLength = 255

// Visible ASCII only (0x21 to 0x7e): no spaces, controls or other bytes.
const keyPattern = /^[\x21-\x7e]+$/

/**
 * Returns the idempotency key of a request, null when the header is absent,
 * or a KeyInvalidError. The IETF draft sends the key as a quoted string
 * (`"abc"`), so surrounding double quotes are dropped.
 */
export function readKey (request: FastifyRequest, header: string): string | null | Error {
  const value = request.headers[header]
  if (value === undefined) {
    return null
  }
  if (typeof value !== 'string' || countHeaderLines(request, header) > 1) {
    return new KeyInvalidError(header, 'send the key in one header line')
  }

  const key = isQuoted(value) ? value.slice(1, -1) : value
  if (key === '') {
    return new KeyInvalidError(header, 'the key is empty')
  }
  if (key.length > maxKeyLength) {
    return new KeyInvalidError(header, `the key is longer than ${maxKeyLength} characters`)
  }
  if (!keyPattern.test(key)) {
    return new KeyInvalidError(header, 'the key must contain only visible ASCII characters')
  }
  return key
}

function isQuoted (value: string): boolean {
  return value.length >= 2 && value.startsWith('"') && value.endsWith('"')
}

/**
 * Counts the header lines that carried `header`. Node joins repeated lines
 * with ', ', so only a value that contains one needs the raw headers.
 */
function countHeaderLines (request: FastifyRequest, header: string): number {
  const value = request.headers[header] as string
  if (!value.includes(', ')) {
    return 1
  }
  const rawHeaders = request.raw.rawHeaders
  let count = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() === header) {
      count++
    }
  }
  return count
}

/**
 * Returns the default encoder for one route. It hashes method, route,
 * route parameters, `authorization` header and key. The route pattern, its
 * constraints and the decoded parameters name the operation, so `/orders`
 * and `/%6Frders` are one operation, while one key sent to two routes, or by
 * two callers, names two separate operations.
 */
export function createDefaultEncoder (routeId: string) {
  return function defaultEncoder (request: FastifyRequest, key: string): string {
    return createHash('sha256')
      .update(request.method)
      .update('\0')
      .update(routeId)
      .update('\0')
      .update(JSON.stringify(request.params ?? null))
      .update('\0')
      .update(request.headers.authorization ?? '')
      .update('\0')
      .update(key)
      .digest('base64url')
  }
}

function queryOf (url: string): string {
  const queryStart = url.indexOf('?')
  return queryStart === -1 ? '' : url.slice(queryStart + 1)
}

function startFingerprint (request: FastifyRequest): Hash {
  return createHash('sha256').update(queryOf(request.url)).update('\0')
}

/** Returns the fingerprint of a request that sent no body. */
export function fingerprintWithoutBody (request: FastifyRequest): string {
  return startFingerprint(request).digest('base64url')
}

/** The hash of a request body, taken as its bytes are read. */
export interface HashedBody {
  /**
   * Returns the fingerprint of query string and body, or, when the body is
   * still streaming, of the query string alone. Chunks read later are no
   * longer hashed.
   */
  digest (): string
  /** Reads and drops the rest of a body that nothing read. */
  discard (): void
}

/**
 * Hashes each chunk of the body as it is read, so the fingerprint covers the
 * exact bytes received before any parser reads them.
 *
 * The hash watches the stream's `data` events rather than wrapping it,
 * because some parsers, such as @fastify/multipart, read `request.raw`
 * directly, and Fastify checks `content-length` against the stream it
 * passed to preParsing. A parser that reads the whole body (JSON, forms,
 * `parseAs`, multipart fields) is done before the key is claimed. A body
 * that the handler reads as a stream is not, and waiting for it would mean
 * buffering it all, so its fingerprint leaves the body out.
 */
export function hashBody (request: FastifyRequest, body: Readable): HashedBody {
  const hash = startFingerprint(request)
  let received = false
  let digested = false

  const emit = body.emit
  body.emit = function emitAndHash (this: Readable, event: string | symbol, ...args: unknown[]) {
    if (event === 'data' && !digested) {
      hash.update(args[0] as Buffer)
    } else if (event === 'end') {
      received = true
    }
    return emit.call(this, event, ...args)
  } as Readable['emit']

  function digest (): string {
    digested = true
    if (!received) {
      return startFingerprint(request).update('streamed body').digest('base64url')
    }
    return hash.digest('base64url')
  }

  function discard () {
    if (!received && body.readableFlowing !== true) {
      body.resume()
    }
  }
  return { digest, discard }
}
