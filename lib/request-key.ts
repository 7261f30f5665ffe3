import crypto, { createHash, type Hash } from 'node:crypto'
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

// crypto.hash() digests in one call, without the Hash object of
// createHash(). Node 20 has it from 20.12 on.
const sha256: (data: string | Buffer) => string = typeof crypto.hash === 'function'
  ? (data) => crypto.hash('sha256', data, 'base64url')
  : (data) => createHash('sha256').update(data).digest('base64url')

/**
 * Returns the default encoder for one route. It hashes method, route,
 * route parameters, `authorization` header and key. The route pattern, its
 * constraints and the decoded parameters name the operation, so `/orders`
 * and `/%6Frders` are one operation, while one key sent to two routes, or by
 * two callers, names two separate operations.
 */
export function createDefaultEncoder (routeId: string) {
  return function defaultEncoder (request: FastifyRequest, key: string): string {
    const params = JSON.stringify(request.params ?? null)
    const authorization = request.headers.authorization ?? ''
    return sha256(`${request.method}\0${routeId}\0${params}\0${authorization}\0${key}`)
  }
}

/** Returns what every fingerprint starts with: the query string and a separator. */
function fingerprintPrefix (request: FastifyRequest): string {
  const url = request.url
  const queryStart = url.indexOf('?')
  return queryStart === -1 ? '\0' : `${url.slice(queryStart + 1)}\0`
}

/** Returns the fingerprint of a request that sent no body. */
export function fingerprintWithoutBody (request: FastifyRequest): string {
  return sha256(fingerprintPrefix(request))
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
 * exact bytes that the parser reads, after the route's own preParsing hooks.
 *
 * The hash watches the stream's `data` events rather than wrapping it,
 * because some parsers, such as @fastify/multipart, read `request.raw`
 * directly, and Fastify checks `content-length` against the stream it
 * passed to preParsing. A parser that reads the whole body (JSON, forms,
 * `parseAs`, multipart fields) is done before the key is claimed. A body
 * that the handler reads as a stream is not, and waiting for it would mean
 * buffering it all, so its fingerprint leaves the body out.
 *
 * A small body usually arrives in one chunk, which is kept and hashed in
 * one call at the end. A second chunk starts an incremental hash, so that
 * a long body is never held here.
 */
export function hashBody (request: FastifyRequest, body: Readable): HashedBody {
  const prefix = fingerprintPrefix(request)
  let firstChunk: Buffer | null = null
  let hash: Hash | null = null
  let received = false
  let digested = false

  function addChunk (chunk: Buffer) {
    if (firstChunk === null && hash === null) {
      firstChunk = chunk
      return
    }
    if (hash === null) {
      hash = createHash('sha256').update(prefix).update(firstChunk as Buffer)
      firstChunk = null
    }
    hash.update(chunk)
  }

  const emit = body.emit
  body.emit = function emitAndHash (this: Readable, event: string | symbol, ...args: unknown[]) {
    if (event === 'data' && !digested) {
      // A stream that an earlier preParsing hook decoded emits strings.
      const chunk = args[0] as Buffer | string
      addChunk(typeof chunk === 'string' ? Buffer.from(chunk) : chunk)
    } else if (event === 'end') {
      received = true
    }
    return emit.call(this, event, ...args)
  } as Readable['emit']

  function digest (): string {
    digested = true
    if (!received) {
      return sha256(`${prefix}streamed body`)
    }
    if (hash !== null) {
      return hash.digest('base64url')
    }
    if (firstChunk === null) {
      return sha256(prefix)
    }
    return sha256(Buffer.concat([Buffer.from(prefix), firstChunk]))
  }

  function discard () {
    if (!received && body.readableFlowing !== true) {
      body.resume()
    }
  }
  return { digest, discard }
}
