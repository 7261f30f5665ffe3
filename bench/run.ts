// Benchmarks the plugin against plain Fastify on the same routes: see
// BENCHMARKS.md for the scenarios, the flags and the latest figures.
import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { parseArgs, promisify } from 'node:util'
import { Redis } from 'ioredis'
import { buildPlugin, pluginEntry, removeBuild } from './build'
import { connections } from './load'
import { measureRun, type RunResult, type RunSettings } from './measure'
import type { MemoryMessage } from './memory'
import { forkScript, nextMessage, repoRoot, startRedisServer, stopChild, type RedisProcess } from './processes'
import { formatProfile, summarizeProfile } from './profile'
import {
  formatTable,
  skippedScenario,
  summarizeMemory,
  summarizeScenario,
  type MemorySummary,
  type RunTriple,
  type ScenarioSummary
} from './report'
import { groupByRoute, scenarios, type Scenario } from './scenarios'

const execFileAsync = promisify(execFile)

const usage = `Usage: npm run bench -- [options]

  --quick               short runs: 0.5 s warm-up, 2 s measured, 100000 memory entries
  --duration SECONDS    measured load per run (default 5, env BENCH_DURATION)
  --warmup SECONDS      unrecorded load before each run (default 1, env BENCH_WARMUP)
  --rounds N            plugin runs per scenario; figures are medians (default 1, env BENCH_ROUNDS)
  --memory-entries N    entries stored for the memory figure (default 1000000)
  --only ID,ID          run only these parts (ids: ${[...scenarios.map((s) => s.id), 'memory'].join(', ')})
  --json FILE           also write all results as JSON to FILE
  --profile             profile the server with --cpu-prof, in place of the table: on the
                        memory first request and replay, or on the scenarios of --only
  --help                print this text

Redis scenarios start a private redis-server on 127.0.0.1, or use REDIS_URL
when redis-server cannot be started.`

interface Settings {
  warmup: number
  duration: number
  rounds: number
  memoryEntries: number
  only: Set<string> | null
  json: string | null
  profile: boolean
}

function readSettings (): Settings {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      duration: { type: 'string' },
      warmup: { type: 'string' },
      rounds: { type: 'string' },
      'memory-entries': { type: 'string' },
      only: { type: 'string' },
      json: { type: 'string' },
      profile: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false }
    }
  })
  if (values.help) {
    console.log(usage)
    process.exit(0)
  }
  const quick = values.quick
  return {
    warmup: positiveNumber('--warmup', values.warmup ?? process.env.BENCH_WARMUP, quick ? 0.5 : 1, true),
    duration: positiveNumber('--duration', values.duration ?? process.env.BENCH_DURATION, quick ? 2 : 5),
    rounds: positiveInteger('--rounds', values.rounds ?? process.env.BENCH_ROUNDS, 1),
    memoryEntries: positiveInteger('--memory-entries', values['memory-entries'], quick ? 100_000 : 1_000_000),
    only: values.only === undefined ? null : new Set(values.only.split(',')),
    json: values.json ?? null,
    profile: values.profile
  }
}

function positiveNumber (name: string, text: string | undefined, fallback: number, zeroAllowed = false): number {
  if (text === undefined || text === '') {
    return fallback
  }
  const value = Number(text)
  if (!Number.isFinite(value) || value < 0 || (value === 0 && !zeroAllowed)) {
    throw new Error(`Invalid ${name}: ${JSON.stringify(text)}, expected a positive number`)
  }
  return value
}

function positiveInteger (name: string, text: string | undefined, fallback: number): number {
  const value = positiveNumber(name, text, fallback)
  if (!Number.isSafeInteger(value)) {
    throw new Error(`Invalid ${name}: ${JSON.stringify(text)}, expected a whole number`)
  }
  return value
}

interface RedisTarget {
  url: string
  version: string
  client: Redis
  server: RedisProcess | null
}

/** Starts a private Redis, or connects to REDIS_URL when that fails. */
async function openRedis (): Promise<RedisTarget | string> {
  let server: RedisProcess | null = null
  let url = process.env.REDIS_URL ?? ''
  try {
    server = await startRedisServer()
    url = server.url
  } catch (error) {
    if (url === '') {
      return `${(error as Error).message}, and REDIS_URL is not set`
    }
    console.error(`${(error as Error).message}: using REDIS_URL`)
  }
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 })
  await client.connect()
  const info = await client.info('server')
  const version = /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown'
  return { url, version, client, server }
}

async function closeRedis (redis: RedisTarget): Promise<void> {
  await redis.client.quit()
  await redis.server?.stop()
}

/** Deletes the keys this bench wrote, so that runs start alike. */
async function deleteKeys (client: Redis, prefix: string): Promise<void> {
  let cursor = '0'
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    if (keys.length > 0) {
      await client.unlink(...keys)
    }
    cursor = next
  } while (cursor !== '0')
}

function describeRun (label: string, run: RunResult): string {
  const redis = run.redisCpuMicrosPerRequest === null
    ? ''
    : `, redis-server ${run.redisCpuMicrosPerRequest.toFixed(0)} µs/req`
  return `${label.padEnd(36)} ${run.rps.toFixed(0).padStart(6)} rps  ` +
    `p50 ${run.p50.toFixed(2)} ms  p99 ${run.p99.toFixed(2)} ms  ` +
    `server CPU ${(run.serverCpu * 100).toFixed(0)}%, ${run.cpuMicrosPerRequest.toFixed(0)} µs/req${redis}`
}

/** Returns the scenario that plain Fastify runs for a group: its route, and a new key per POST. */
function plainScenario (group: Scenario[]): Scenario {
  const first = group[0] as Scenario
  const keys = first.keys === 'none' ? 'none' : 'unique'
  return { ...first, id: `plain ${first.method} ${first.path}`, keys }
}

/**
 * Runs a group as plain, scenario, plain, scenario, ..., plain, so each
 * plugin run sits between two plain runs of the same traffic.
 */
async function runGroup (
  group: Scenario[],
  settings: Settings,
  runSettings: RunSettings,
  redis: RedisTarget | null
): Promise<Map<string, RunTriple[]>> {
  const plain = plainScenario(group)
  const triples = new Map<string, RunTriple[]>(group.map((scenario) => [scenario.id, []]))
  const measurePlain = async () => {
    const run = await measureRun(plain, false, runSettings)
    console.error(describeRun(`plain Fastify, ${plain.method} ${plain.path}`, run))
    return run
  }

  let before = await measurePlain()
  for (let round = 0; round < settings.rounds; round++) {
    for (const scenario of group) {
      const plugin = await measureRun(scenario, true, runSettings)
      console.error(describeRun(scenario.name, plugin))
      if (redis !== null && scenario.storage === 'redis') {
        await deleteKeys(redis.client, runSettings.keyPrefix)
      }
      const after = await measurePlain()
      triples.get(scenario.id)?.push({ before, plugin, after })
      before = after
    }
  }
  return triples
}

async function measureMemory (entries: number): Promise<MemorySummary> {
  const child = forkScript('memory.ts', ['--expose-gc', '--max-old-space-size=4096'], {
    BENCH_MEMORY_ENTRIES: String(entries),
    BENCH_PLUGIN: pluginEntry
  })
  try {
    const message = await nextMessage<MemoryMessage>(child, 'memory', 120_000)
    return summarizeMemory(message)
  } finally {
    await stopChild(child)
  }
}

/** Returns the commit of the plugin code, marked when index.ts or lib/ differ from it. */
async function pluginSource (): Promise<string> {
  try {
    const { stdout: commit } = await execFileAsync('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot })
    const { stdout: changes } = await execFileAsync('git', ['status', '--porcelain', '--', 'index.ts', 'lib'], { cwd: repoRoot })
    return changes.trim() === '' ? commit.trim() : `${commit.trim()} with uncommitted changes to index.ts or lib/`
  } catch {
    return 'unknown: git failed'
  }
}

async function machineInfo (redisVersion: string | null) {
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '')
  return {
    nproc: os.availableParallelism(),
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    redis: redisVersion,
    platform: `${os.type()} ${os.release()} ${os.arch()}`
  }
}

function selectedScenarios (settings: Settings): Scenario[] {
  if (settings.only === null) {
    return scenarios
  }
  for (const id of settings.only) {
    if (id !== 'memory' && !scenarios.some((scenario) => scenario.id === id)) {
      throw new Error(`Unknown id in --only: ${id}. Run npm run bench -- --help for the ids`)
    }
  }
  return scenarios.filter((scenario) => settings.only?.has(scenario.id))
}

async function runBench (settings: Settings, runSettings: RunSettings, redis: RedisTarget | string) {
  const summaries: ScenarioSummary[] = []
  for (const group of groupByRoute(selectedScenarios(settings))) {
    const runnable = typeof redis === 'string' ? group.filter((s) => s.storage !== 'redis') : group
    const triples = runnable.length === 0
      ? new Map<string, RunTriple[]>()
      : await runGroup(runnable, settings, runSettings, typeof redis === 'string' ? null : redis)
    for (const scenario of group) {
      const runs = triples.get(scenario.id)
      const plainStatus = scenario.method === 'GET' ? 200 : 201
      summaries.push(runs === undefined
        ? skippedScenario(scenario, redis as string)
        : summarizeScenario(scenario, plainStatus, runs))
    }
  }
  const memory = settings.only === null || settings.only.has('memory')
    ? await measureMemory(settings.memoryEntries)
    : null
  return { summaries, memory }
}

/** Profiles the server on each selected scenario, or on the memory ones by default. */
async function profileScenarios (settings: Settings, runSettings: RunSettings, redis: RedisTarget | string) {
  const selected = settings.only === null
    ? scenarios.filter((s) => s.id === 'first-request-memory' || s.id === 'replay-memory')
    : selectedScenarios(settings)
  for (const scenario of selected) {
    if (scenario.storage === 'redis' && typeof redis === 'string') {
      console.error(`${scenario.name}: not profiled, ${redis}`)
      continue
    }
    // Plain Fastify on the same traffic shows which frames the plugin adds.
    await profileRun(scenario, false, runSettings)
    await profileRun(scenario, true, runSettings)
    if (typeof redis !== 'string') {
      await deleteKeys(redis.client, runSettings.keyPrefix)
    }
  }
}

async function profileRun (scenario: Scenario, plugin: boolean, runSettings: RunSettings) {
  const name = plugin ? scenario.id : `${scenario.id}-plain`
  const dir = path.join(repoRoot, 'bench', 'profiles', name)
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const run = await measureRun(scenario, plugin, runSettings, { dir })
  const label = plugin ? scenario.name : `plain Fastify, ${scenario.method} ${scenario.path}`
  console.error(describeRun(`${label} (profiled)`, run))
  const summary = await summarizeProfile(await mainThreadProfile(dir), run.serverWindow)
  console.log(formatProfile(summary, 20))
  console.log()
}

/**
 * Returns the profile of the main thread, whose thread id is 0 in Node's
 * default name CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile. The tsx
 * loader thread writes a profile of its own.
 */
async function mainThreadProfile (dir: string): Promise<string> {
  const files = await readdir(dir)
  const main = files.find((file) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(file))
  if (main === undefined) {
    throw new Error(`No main thread profile in ${dir}: found ${files.join(', ') || 'no files'}`)
  }
  return path.join(dir, main)
}

async function main () {
  const settings = readSettings()
  const runSettings: RunSettings = {
    warmup: settings.warmup,
    duration: settings.duration,
    redisUrl: null,
    redisPid: null,
    keyPrefix: `idempotency-bench:${process.pid}:`
  }
  const started = new Date()
  try {
    await buildPlugin()
    await runWithRedis(settings, runSettings, started)
  } finally {
    await removeBuild()
  }
}

/** Runs the bench or the profiles, with Redis when a selected scenario needs it. */
async function runWithRedis (settings: Settings, runSettings: RunSettings, started: Date) {
  const needsRedis = selectedScenarios(settings).some((scenario) => scenario.storage === 'redis')
  const redis = needsRedis ? await openRedis() : 'no Redis scenario was selected'
  if (typeof redis === 'string') {
    if (needsRedis) {
      console.error(`Redis scenarios skipped: ${redis}`)
    }
  } else {
    runSettings.redisUrl = redis.url
    runSettings.redisPid = redis.server?.pid ?? null
  }
  try {
    if (settings.profile) {
      await profileScenarios(settings, runSettings, redis)
    } else {
      await benchAndReport(settings, runSettings, redis, started)
    }
  } finally {
    if (typeof redis !== 'string') {
      await closeRedis(redis)
    }
  }
}

async function benchAndReport (
  settings: Settings,
  runSettings: RunSettings,
  redis: RedisTarget | string,
  started: Date
) {
  const { summaries, memory } = await runBench(settings, runSettings, redis)
  const machine = await machineInfo(typeof redis === 'string' ? null : redis.version)
  const source = await pluginSource()
  printResults(summaries, memory, machine, source, settings, started)
  if (settings.json !== null) {
    const record = {
      date: started.toISOString(),
      source,
      machine,
      settings: recordedSettings(settings),
      summaries,
      memory
    }
    await writeFile(settings.json, JSON.stringify(record, null, 2) + '\n')
    console.log(`\nWrote ${settings.json}`)
  }
}

function recordedSettings (settings: Settings) {
  return {
    warmupSeconds: settings.warmup,
    durationSeconds: settings.duration,
    rounds: settings.rounds,
    connections,
    memoryEntries: settings.memoryEntries
  }
}

function printResults (
  summaries: ScenarioSummary[],
  memory: MemorySummary | null,
  machine: Awaited<ReturnType<typeof machineInfo>>,
  source: string,
  settings: Settings,
  started: Date
) {
  const seconds = ((Date.now() - started.getTime()) / 1000).toFixed(0)
  console.log()
  console.log(`${started.toISOString()}, plugin at ${source}`)
  console.log(`${machine.nproc} CPUs (${machine.cpu}), Node ${machine.node}, Redis ${machine.redis ?? 'none'}; ` +
    `${settings.warmup} s warm-up + ${settings.duration} s per run, ${settings.rounds} round(s), ` +
    `${connections} connections; took ${seconds} s`)
  console.log()
  console.log(formatTable(summaries, memory))
  console.log()
  for (const summary of summaries) {
    if (summary.redisCpuMicrosPerRequest !== null) {
      console.log(`${summary.name}: redis-server used ${summary.redisCpuMicrosPerRequest.toFixed(0)} µs of CPU per request`)
    }
    for (const problem of summary.problems) {
      console.log(`${summary.name}: ${problem}`)
    }
  }
}

main().catch((error) => {
  console.error(error)
  process.exitCode = 1
})
