/** Requests to the payments route of the server in test/fixtures/server.ts. */

export interface PostResult {
  status: number
  replayed: string | null
  body: string
}

/** Sends `POST /payments` with `key` and returns the parts the tests check. */
export async function post (base: string, key: string): Promise<PostResult> {
  const response = await fetch(`${base}/payments`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"amount":100}'
  })
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed'),
    body: await response.text()
  }
}

/** Returns how often each status occurs, such as `200×1, 409×99`. */
export function describeStatuses (responses: PostResult[]): string {
  const counts = new Map<number, number>()
  for (const response of responses) {
    counts.set(response.status, (counts.get(response.status) ?? 0) + 1)
  }
  return [...counts].sort(([a], [b]) => a - b).map(([status, count]) => `${status}×${count}`).join(', ')
}
