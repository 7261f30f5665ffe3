import type { FastifyReply } from 'fastify'
import type { StoredResponse } from './storage'

// Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, `date`
// and `set-cookie` must not be repeated to a later client, and the replay
// computes its own content-length.
const unstoredHeaders = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'date',
  'set-cookie',
  'content-length'
])

export const replayedHeader = 'idempotent-replayed'

/** Builds the stored form of a response from the payload passed to onSend. */
export function captureResponse (reply: FastifyReply, body: string | Buffer): StoredResponse {
  const headers: Record<string, string | string[]> = {}
  const replyHeaders = reply.getHeaders()
  for (const name in replyHeaders) {
    const value = replyHeaders[name]
    if (value === undefined || unstoredHeaders.has(name)) {
      continue
    }
    headers[name] = Array.isArray(value) ? value.map(String) : String(value)
  }
  return { statusCode: reply.statusCode, headers, body }
}

/**
 * Sends a stored response again, marked with `idempotent-replayed: true`.
 * Headers that this request's own hooks already set, such as CORS headers
 * or a request id, win over the stored ones.
 */
export function sendReplay (
  reply: FastifyReply,
  response: StoredResponse,
  statusCode: number | null
): FastifyReply {
  for (const name in response.headers) {
    if (!reply.hasHeader(name)) {
      reply.header(name, response.headers[name])
    }
  }
  return reply
    .code(statusCode ?? response.statusCode)
    .header(replayedHeader, 'true')
    .send(response.body)
}
