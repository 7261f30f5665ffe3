import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { access, constants, mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import type { Test } from 'tap'

const execFileAsync = promisify(execFile)

export interface RedisServer {
  url: string
  port: number
  /** Stops the server, which `start` brings back on the same port. */
  stop (): Promise<void>
  /** Starts the server again on the same port, with no data. */
  start (): Promise<void>
}

export interface RedisNode {
  host: string
  port: number
}

const host = '127.0.0.1'
const startTimeout = 10_000
const clusterTimeout = 30_000

/*
 * Ports are drawn from 10000-21999, so the cluster bus port (port + 10000)
 * stays below 32768, where Linux starts handing out ephemeral ports.
 */
const minPort = 10_000
const portRange = 12_000
const clusterBusOffset = 10_000

/** Servers still running, killed by pid if the test process exits early. */
const running = new Set<ChildProcess>()
process.on('exit', () => {
  for (const child of running) {
    child.kill('SIGKILL')
  }
})

/**
 * Returns the URL of a Redis server for this test: `REDIS_URL` when set,
 * otherwise a private server that stops in teardown. Returns null, after
 * marking the test as skipped, when there is no redis-server to start.
 */
export async function redisUrl (t: Test): Promise<string | null> {
  const url = process.env.REDIS_URL
  if (url !== undefined && url !== '') {
    return url
  }
  const server = await startRedisServer(t)
  return server?.url ?? null
}

/**
 * Starts a private redis-server on a free port and stops it in teardown.
 * Returns null, after marking the test as skipped, when redis-server is
 * not on PATH, and throws instead when `CI` is set.
 */
export async function startRedisServer (t: Test): Promise<RedisServer | null> {
  if (!(await isOnPath('redis-server'))) {
    return skipWithoutRedis(t, 'redis-server')
  }
  const port = await findFreePort(false)
  let child: ChildProcess | null = null

  const start = async (): Promise<void> => {
    if (child !== null) {
      throw new Error(`redis-server on port ${port} is already running`)
    }
    child = await spawnRedisServer(port, [])
  }
  const stop = async (): Promise<void> => {
    const stopping = child
    child = null
    if (stopping !== null) {
      await stopProcess(stopping)
    }
  }

  t.teardown(stop)
  await start()
  return { url: `redis://${host}:${port}`, port, stop, start }
}

/**
 * Starts a Redis Cluster of three primaries in a temporary directory and
 * returns its nodes once every node reports `cluster_state:ok`. Teardown
 * stops the nodes and removes the directory. Skips or throws like
 * `startRedisServer` when redis-server or redis-cli is missing.
 */
export async function startRedisCluster (t: Test): Promise<RedisNode[] | null> {
  for (const binary of ['redis-server', 'redis-cli']) {
    if (!(await isOnPath(binary))) {
      return skipWithoutRedis(t, binary)
    }
  }
  const dir = await mkdtemp(path.join(os.tmpdir(), 'idempotency-redis-cluster-'))
  const children: ChildProcess[] = []
  t.teardown(async () => {
    await Promise.all(children.map(stopProcess))
    await rm(dir, { recursive: true, force: true })
  })

  const nodes: RedisNode[] = []
  for (let i = 0; i < 3; i++) {
    const port = await findFreePort(true)
    children.push(await spawnRedisServer(port, [
      '--cluster-enabled', 'yes',
      '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
      '--dir', dir
    ]))
    nodes.push({ host, port })
  }

  await execFileAsync('redis-cli', [
    '--cluster', 'create',
    ...nodes.map((node) => `${node.host}:${node.port}`),
    '--cluster-replicas', '0',
    '--cluster-yes'
  ], { timeout: clusterTimeout })
  await Promise.all(nodes.map(waitForClusterOk))
  return nodes
}

function skipWithoutRedis (t: Test, binary: string): null {
  if (process.env.CI) {
    throw new Error(
      `${binary} not found on PATH, and CI is set: ` +
      'install Redis in the CI image, or set REDIS_URL for tests that accept it'
    )
  }
  const message = `${binary} not found on PATH: skipping Redis tests. ` +
    'Install Redis or set REDIS_URL to run them'
  console.error(`\n*** ${message} ***\n`)
  t.plan(0, message)
  return null
}

async function isOnPath (binary: string): Promise<boolean> {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean)
  for (const dir of dirs) {
    try {
      await access(path.join(dir, binary), constants.X_OK)
      return true
    } catch {
      // Missing or not executable here, so try the next directory.
    }
  }
  return false
}

/** Returns a random free port, whose bus port is also free if asked. */
async function findFreePort (withBusPort: boolean): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = minPort + Math.floor(Math.random() * portRange)
    if (!(await isPortFree(port))) {
      continue
    }
    if (!withBusPort || await isPortFree(port + clusterBusOffset)) {
      return port
    }
  }
  throw new Error(`No free port found in ${minPort}-${minPort + portRange - 1}`)
}

async function isPortFree (port: number): Promise<boolean> {
  const server = net.createServer()
  try {
    server.listen(port, host)
    await once(server, 'listening')
    return true
  } catch {
    return false
  } finally {
    server.close()
  }
}

async function spawnRedisServer (port: number, extraArgs: string[]): Promise<ChildProcess> {
  const child = spawn('redis-server', [
    '--port', String(port),
    '--bind', host,
    '--save', '',
    '--appendonly', 'no',
    '--loglevel', 'warning',
    ...extraArgs
  ], { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  child.once('exit', () => running.delete(child))

  // Keep the output for the error message if the server fails to start.
  let output = ''
  const keepOutput = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-4000)
  }
  child.stdout?.on('data', keepOutput)
  child.stderr?.on('data', keepOutput)

  try {
    await waitForPing(port, child)
  } catch (error) {
    await stopProcess(child)
    throw new Error(`redis-server on port ${port} failed to start: ${String(error)}\n${output}`)
  }
  return child
}

async function waitForPing (port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + startTimeout
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`exited with ${child.exitCode ?? child.signalCode}`)
    }
    if (await answersPing(port)) {
      return
    }
    await sleep(50)
  }
  throw new Error(`no PING reply within ${startTimeout} ms`)
}

/** Sends an inline PING, so the check needs no Redis client. */
async function answersPing (port: number): Promise<boolean> {
  const socket = net.connect(port, host)
  socket.setTimeout(1000, () => socket.destroy(new Error('PING timed out')))
  try {
    await once(socket, 'connect')
    socket.write('PING\r\n')
    const [data] = await once(socket, 'data') as [Buffer]
    return data.toString().startsWith('+PONG')
  } catch {
    return false
  } finally {
    socket.destroy()
  }
}

async function waitForClusterOk (node: RedisNode): Promise<void> {
  const deadline = Date.now() + clusterTimeout
  while (Date.now() < deadline) {
    const { stdout } = await execFileAsync('redis-cli', [
      '-h', node.host, '-p', String(node.port), 'cluster', 'info'
    ])
    if (stdout.includes('cluster_state:ok')) {
      return
    }
    await sleep(100)
  }
  throw new Error(`Redis Cluster node ${node.host}:${node.port} not ok within ${clusterTimeout} ms`)
}

/** Stops a server by its pid, with SIGKILL if SIGTERM takes too long. */
async function stopProcess (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return
  }
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000)
  try {
    await exited
  } finally {
    clearTimeout(timer)
  }
}
