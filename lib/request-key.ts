import { createHash, type Hash } from 'node:crypto'
import { Transform, pipeline, type Readable } from 'node:stream'
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
 * Hashes method, path, `authorization` header and key, so one key sent to two
 * routes, or by two callers, names two separate operations.
 */
export function defaultEncoder (request: FastifyRequest, key: string): string {
  const authorization = request.headers.authorization ?? ''
  return createHash('sha256')
    .update(request.method)
    .update('\0')
    .update(pathOf(request.url))
    .update('\0')
    .update(authorization)
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

/** Starts the fingerprint of a request: its query string, then its body. */
export function startFingerprint (request: FastifyRequest): Hash {
  return createHash('sha256').update(queryOf(request.url)).update('\0')
}

/** Returns the fingerprint of a request that sent no body. */
export function fingerprintWithoutBody (request: FastifyRequest): string {
  return startFingerprint(request).digest('base64url')
}

/**
 * Returns a stream that passes the body through unchanged and adds each
 * chunk to `hash`, so the fingerprint covers the exact bytes received
 * before any parser sees them.
 */
export function hashBody (body: Readable, hash: Hash): Readable {
  const hashing = new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      hash.update(chunk)
      callback(null, chunk)
    }
  })
  // pipeline() forwards an aborted upload's error to the body parser.
  pipeline(body, hashing, () => {})
  return hashing
}
