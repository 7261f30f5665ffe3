import { createHash, type Hash } from 'node:crypto'
import { Readable, finished } from 'node:stream'
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
 * Hashes method, route, route parameters, `authorization` header and key.
 * The route pattern and the decoded parameters name the operation, so
 * `/orders` and `/%6Frders` are one operation, while one key sent to two
 * routes, or by two callers, names two separate operations.
 */
export function defaultEncoder (request: FastifyRequest, key: string): string {
  const hash = createHash('sha256')
    .update(request.method)
    .update('\0')
    .update(request.routeOptions.url ?? pathOf(request.url))
  const params = request.params as Record<string, string> | undefined
  for (const name in params) {
    hash.update('\0').update(name).update('=').update(params[name] as string)
  }
  return hash
    .update('\0')
    .update(request.headers.authorization ?? '')
    .update('\0')
    .update(key)
    .digest('base64url')
}

function pathOf (url: string): string {
  const queryStart = url.indexOf('?')
  return queryStart === -1 ? url : url.slice(0, queryStart)
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

/** A request body on its way to the parser, and the hash of its bytes. */
export interface HashedBody {
  stream: Readable
  /**
   * Returns the fingerprint of query string and body, or, when the body is
   * still streaming, of the query string alone. Chunks that arrive later
   * are passed on but no longer hashed.
   */
  digest (): string
  /** Reads and drops the rest of a body that no parser read. */
  discard (): void
}

/**
 * Passes the body through unchanged and hashes each chunk, so the
 * fingerprint covers the exact bytes received before any parser sees them.
 *
 * The body is read only when the parser reads the returned stream, because
 * some parsers, such as @fastify/multipart, leave that stream alone and read
 * `request.raw` themselves later. A parser that reads the whole body (JSON,
 * forms, `parseAs`) is done before the key is claimed. A body that the
 * handler reads as a stream is not, and waiting for it would mean buffering
 * it all, so its fingerprint leaves the body out.
 */
export function hashBody (request: FastifyRequest, body: Readable): HashedBody {
  const hash = startFingerprint(request)
  let reading = false
  let received = false
  let digested = false

  const stream = new Readable({
    read () {
      if (!reading) {
        reading = true
        startReading()
      }
      body.resume()
    }
  })

  function startReading () {
    body.on('data', (chunk: Buffer) => {
      if (!digested) {
        hash.update(chunk)
      }
      if (!stream.push(chunk)) {
        body.pause()
      }
    })
    // finished() also reports an upload that the client aborted midway.
    finished(body, (err) => {
      if (err) {
        stream.destroy(err)
        return
      }
      received = true
      stream.push(null)
    })
  }

  function digest (): string {
    digested = true
    if (!received) {
      return startFingerprint(request).update('streamed body').digest('base64url')
    }
    return hash.digest('base64url')
  }
  function discard () {
    if (!reading) {
      body.resume()
    }
  }
  return { stream, digest, discard }
}
