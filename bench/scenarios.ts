/** One plugin configuration under one kind of traffic, with its target. */
export interface Scenario {
  id: string
  /** Row name in the table. */
  name: string
  storage: 'memory' | 'redis'
  method: 'GET' | 'POST'
  path: string
  /** Idempotency keys of the requests: none, a new one each, or stored ones sent again. */
  keys: 'none' | 'unique' | 'replayed'
  /** Minimum rps as a share of plain Fastify on the same traffic. */
  target: number
  /** The status every measured response must have. */
  status: number
}

/** Number of keys stored before a replay run, then sent in turn. */
export const replayKeyCount = 100

/** Max heap bytes per stored entry beyond the body. */
export const memoryTarget = 1024

export const scenarios: Scenario[] = [
  {
    id: 'pass-through-get',
    name: 'pass-through, GET',
    storage: 'memory',
    method: 'GET',
    path: '/payments/1',
    keys: 'none',
    target: 0.97,
    status: 200
  },
  {
    id: 'pass-through-exempt',
    name: 'pass-through, exempt POST',
    storage: 'memory',
    method: 'POST',
    path: '/exempt-payments',
    keys: 'unique',
    target: 0.97,
    status: 201
  },
  {
    id: 'first-request-memory',
    name: 'first request, memory',
    storage: 'memory',
    method: 'POST',
    path: '/payments',
    keys: 'unique',
    target: 0.85,
    status: 201
  },
  {
    id: 'replay-memory',
    name: 'replay, memory',
    storage: 'memory',
    method: 'POST',
    path: '/payments',
    keys: 'replayed',
    target: 1.0,
    // The plugin's default conflictStatusCode replaces the stored 201.
    status: 409
  },
  {
    id: 'first-request-redis',
    name: 'first request, Redis',
    storage: 'redis',
    method: 'POST',
    path: '/payments',
    keys: 'unique',
    target: 0.5,
    status: 201
  },
  {
    id: 'replay-redis',
    name: 'replay, Redis',
    storage: 'redis',
    method: 'POST',
    path: '/payments',
    keys: 'replayed',
    target: 0.6,
    status: 409
  }
]

/**
 * Groups scenarios that send the same method and path, so that they share
 * the plain Fastify runs around them.
 */
export function groupByRoute (list: Scenario[]): Scenario[][] {
  const groups = new Map<string, Scenario[]>()
  for (const scenario of list) {
    const route = `${scenario.method} ${scenario.path}`
    groups.set(route, [...(groups.get(route) ?? []), scenario])
  }
  return [...groups.values()]
}
