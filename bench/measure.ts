import { randomUUID } from 'node:crypto'
import { MemoryStorage } from '../lib/memory-storage'
import { pluginEntry } from './build'
import { cycledKeys, paymentBody, runLoad, uniqueKeys, type LoadResult, type Traffic } from './load'
import { forkScript, host, nextMessage, stopChild, threadCpuMicros } from './processes'
import type { TimeWindow } from './profile'
import { replayKeyCount, type Scenario } from './scenarios'
import type { CpuMessage, ListeningMessage, ServerSetup } from './server'

// Filling the storage first measures first requests in the steady state of
// a long-running server, where each new key evicts the oldest.
const defaultMaxEntries = new MemoryStorage().maxEntries

export interface RunSettings {
  /** Seconds of load before measuring, which are not recorded. */
  warmup: number
  /** Seconds of measured load. */
  duration: number
  redisUrl: string | null
  /** Process id of the private redis-server, whose CPU time is measured. */
  redisPid: number | null
  /** Prefix of the Redis keys that the plugin writes in this bench. */
  keyPrefix: string
}

export interface RunResult extends LoadResult {
  /** Server CPU time during the measured load, as a share of one core. */
  serverCpu: number
  /** Server CPU time per completed request, in microseconds. */
  cpuMicrosPerRequest: number
  /** When the measured load ran, on the server's monotonic clock. */
  serverWindow: TimeWindow
  /** CPU time of the private redis-server per request, in microseconds. */
  redisCpuMicrosPerRequest: number | null
}

/**
 * Directory where the server writes its CPU profiles with `node --cpu-prof`,
 * one per thread, under Node's default names.
 */
export interface ProfileTarget {
  dir: string
}

/**
 * Starts one server, plain Fastify or with the plugin, sends it the traffic
 * of `scenario` and stops it. Replay runs store their keys first.
 */
export async function measureRun (
  scenario: Scenario,
  plugin: boolean,
  settings: RunSettings,
  profile?: ProfileTarget
): Promise<RunResult> {
  const setup: ServerSetup = {
    pluginEntry: plugin ? pluginEntry : null,
    storage: scenario.storage,
    keyPrefix: settings.keyPrefix
  }
  if (plugin && scenario.storage === 'redis') {
    setup.redisUrl = settings.redisUrl ?? undefined
  }
  const child = forkScript('server.ts', profileFlags(profile), { BENCH_SERVER: JSON.stringify(setup) })
  try {
    const { port } = await nextMessage<ListeningMessage>(child, 'listening')
    const traffic = await prepareTraffic(scenario, port)
    if (plugin && scenario.storage === 'memory' && scenario.keys === 'unique') {
      await runLoad(port, traffic, { requests: defaultMaxEntries })
    }
    if (settings.warmup > 0) {
      await runLoad(port, traffic, { seconds: settings.warmup })
    }
    const redisPid = plugin && scenario.storage === 'redis' ? settings.redisPid : null
    const redisBefore = redisPid === null ? null : await threadCpuMicros(redisPid)
    const before = await serverClock(child)
    const load = await runLoad(port, traffic, { seconds: settings.duration })
    const after = await serverClock(child)
    const redisAfter = redisPid === null ? null : await threadCpuMicros(redisPid)
    const cpu = after.micros - before.micros
    const perRequest = (micros: number) => load.requests === 0 ? 0 : micros / load.requests
    return {
      ...load,
      serverCpu: cpu / (load.seconds * 1e6),
      cpuMicrosPerRequest: perRequest(cpu),
      serverWindow: { start: before.monotonicMicros, end: after.monotonicMicros },
      redisCpuMicrosPerRequest: redisBefore === null || redisAfter === null
        ? null
        : perRequest(redisAfter - redisBefore)
    }
  } finally {
    await stopChild(child)
  }
}

function profileFlags (profile: ProfileTarget | undefined): string[] {
  if (profile === undefined) {
    return []
  }
  return [
    '--cpu-prof',
    '--cpu-prof-dir', profile.dir,
    // Samples every 100 µs, where the default is every 1000 µs.
    '--cpu-prof-interval', '100'
  ]
}

async function serverClock (child: ReturnType<typeof forkScript>): Promise<CpuMessage> {
  const reply = nextMessage<CpuMessage>(child, 'cpu')
  child.send({ type: 'cpu' })
  return reply
}

async function prepareTraffic (scenario: Scenario, port: number): Promise<Traffic> {
  const { method, path } = scenario
  if (scenario.keys === 'none') {
    return { method, path, nextKey: null }
  }
  if (scenario.keys === 'unique') {
    return { method, path, nextKey: uniqueKeys() }
  }
  const keys = Array.from({ length: replayKeyCount }, () => randomUUID())
  for (const key of keys) {
    await storeKey(port, path, key)
  }
  return { method, path, nextKey: cycledKeys(keys) }
}

/** Sends one first request with `key`, so that later ones replay it. */
async function storeKey (port: number, path: string, key: string): Promise<void> {
  const response = await fetch(`http://${host}:${port}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: paymentBody
  })
  await response.arrayBuffer()
  if (response.status !== 201) {
    throw new Error(`Storing replay key ${key} returned status ${response.status}, expected 201`)
  }
}
