import { fork, spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { readFile } from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export const host = '127.0.0.1'
export const repoRoot = path.resolve(__dirname, '..')

const startTimeout = 15_000
const stopTimeout = 10_000

/** Children still running, killed by pid if the bench exits early. */
const running = new Set<ChildProcess>()

process.on('exit', () => {
  for (const child of running) {
    child.kill('SIGKILL')
  }
})

// Ctrl-C or a kill would end the bench without the 'exit' event, and
// leave redis-server running, so exit through it.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => process.exit(128 + os.constants.signals[signal]))
}

function track (child: ChildProcess): ChildProcess {
  running.add(child)
  child.once('exit', () => running.delete(child))
  return child
}

/**
 * Forks a TypeScript file of the bench under tsx, with an IPC channel.
 * `nodeFlags` go to node before the file, such as `--cpu-prof`.
 */
export function forkScript (
  file: string,
  nodeFlags: string[],
  env: Record<string, string>
): ChildProcess {
  return track(fork(path.join(__dirname, file), [], {
    cwd: repoRoot,
    execArgv: ['--import', 'tsx', ...nodeFlags],
    env: { ...process.env, ...env },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc']
  }))
}

/** Resolves with the first IPC message of `type`, or rejects on exit. */
export function nextMessage<T> (child: ChildProcess, type: string, timeout = startTimeout): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      finish()
      reject(new Error(`pid ${child.pid} sent no '${type}' message within ${timeout} ms`))
    }, timeout)
    const onMessage = (message: { type?: string }) => {
      if (message.type === type) {
        finish()
        resolve(message as T)
      }
    }
    const onExit = (code: number | null, signal: string | null) => {
      finish()
      reject(new Error(`pid ${child.pid} exited with ${code ?? signal} before its '${type}' message`))
    }
    function finish () {
      clearTimeout(timer)
      child.off('message', onMessage)
      child.off('exit', onExit)
    }
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
}

/**
 * Asks a child to exit by IPC, so that it can write its CPU profile, and
 * kills it by pid when it has not exited in time.
 */
export async function stopChild (child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return
  }
  const exited = once(child, 'exit')
  if (child.connected) {
    // The channel may close while the message is on its way.
    child.send({ type: 'stop' }, (error) => {
      if (error !== null) {
        child.kill('SIGTERM')
      }
    })
  } else {
    child.kill('SIGTERM')
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeout)
  await exited
  clearTimeout(timer)
}

/** Returns a port that was free on 127.0.0.1 a moment ago. */
export async function findFreePort (): Promise<number> {
  const server = net.createServer()
  server.listen(0, host)
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

export interface RedisProcess {
  url: string
  pid: number
  stop (): Promise<void>
}

/**
 * Starts a private redis-server with no persistence on a free port of
 * 127.0.0.1 and waits until it accepts connections.
 */
export async function startRedisServer (): Promise<RedisProcess> {
  const port = await findFreePort()
  const child = track(spawn('redis-server', [
    '--port', String(port),
    '--bind', host,
    '--save', '',
    '--appendonly', 'no',
    '--loglevel', 'warning'
  ], { stdio: ['ignore', 'ignore', 'inherit'] }))
  if (child.pid === undefined) {
    const [error] = await once(child, 'error') as [Error]
    throw new Error(`redis-server failed to start: ${error.message}`)
  }

  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      await exited
    }
  }
  try {
    await waitForPort(port, child)
  } catch (error) {
    await stop()
    throw error
  }
  return { url: `redis://${host}:${port}`, pid: child.pid, stop }
}

/**
 * Returns the CPU time of a process's main thread in microseconds, from
 * /proc/PID/schedstat, or null where that file cannot be read.
 */
export async function threadCpuMicros (pid: number): Promise<number | null> {
  try {
    const schedstat = await readFile(`/proc/${pid}/schedstat`, 'utf8')
    return Number(schedstat.split(' ')[0]) / 1000
  } catch {
    return null
  }
}

async function waitForPort (port: number, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + startTimeout
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`redis-server on port ${port} exited with ${child.exitCode ?? child.signalCode}`)
    }
    if (await canConnect(port)) {
      return
    }
    await sleep(50)
  }
  throw new Error(`redis-server on port ${port} did not accept connections within ${startTimeout} ms`)
}

async function canConnect (port: number): Promise<boolean> {
  const socket = net.connect(port, host)
  try {
    await once(socket, 'connect')
    return true
  } catch {
    return false
  } finally {
    socket.destroy()
  }
}
