import type { RunResult } from './measure'
import type { MemoryMessage } from './memory'
import { memoryTarget, type Scenario } from './scenarios'

/** One plugin run with the plain Fastify runs just before and after it. */
export interface RunTriple {
  before: RunResult
  plugin: RunResult
  after: RunResult
}

export interface ScenarioSummary {
  id: string
  name: string
  target: number
  /** Reason the scenario did not run, or null when it ran. */
  skipped: string | null
  /** Medians over rounds. */
  rps: number
  plainRps: number
  ratio: number
  p50: number
  p99: number
  cpuMicrosPerRequest: number
  plainCpuMicrosPerRequest: number
  /** CPU time of the private redis-server per request, or null. */
  redisCpuMicrosPerRequest: number | null
  /** Lowest and highest ratio over rounds. */
  ratioRange: [number, number]
  /** Largest change between the plain runs around one plugin run. */
  plainDrift: number
  /** Problems that make the figures invalid, such as unexpected statuses. */
  problems: string[]
  pass: boolean
  runs: RunTriple[]
}

export interface MemorySummary extends MemoryMessage {
  target: number
  pass: boolean
}

function median (values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  if (sorted.length % 2 === 1) {
    return sorted[middle] as number
  }
  return ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2
}

function medianOrNull (values: (number | null)[]): number | null {
  const known = values.filter((value): value is number => value !== null)
  return known.length === 0 ? null : median(known)
}

function plainMean (run: RunTriple, field: 'rps' | 'cpuMicrosPerRequest'): number {
  return (run.before[field] + run.after[field]) / 2
}

/** Lists errors and responses whose status is not `status`. */
function checkRun (label: string, run: RunResult, status: number): string[] {
  const problems: string[] = []
  if (run.errors > 0) {
    problems.push(`${label}: ${run.errors} connection errors`)
  }
  for (const [code, count] of Object.entries(run.statuses)) {
    if (Number(code) !== status) {
      problems.push(`${label}: ${count} responses with status ${code}, expected ${status}`)
    }
  }
  if (run.requests === 0) {
    problems.push(`${label}: no completed requests`)
  }
  return problems
}

export function summarizeScenario (scenario: Scenario, plainStatus: number, runs: RunTriple[]): ScenarioSummary {
  const ratios = runs.map((run) => run.plugin.rps / plainMean(run, 'rps'))
  const drifts = runs.map((run) => Math.abs(run.after.rps - run.before.rps) / plainMean(run, 'rps'))
  const problems = runs.flatMap((run) => [
    ...checkRun('plain before', run.before, plainStatus),
    ...checkRun('plugin', run.plugin, scenario.status),
    ...checkRun('plain after', run.after, plainStatus)
  ])
  const ratio = median(ratios)
  return {
    id: scenario.id,
    name: scenario.name,
    target: scenario.target,
    skipped: null,
    rps: median(runs.map((run) => run.plugin.rps)),
    plainRps: median(runs.map((run) => plainMean(run, 'rps'))),
    ratio,
    p50: median(runs.map((run) => run.plugin.p50)),
    p99: median(runs.map((run) => run.plugin.p99)),
    cpuMicrosPerRequest: median(runs.map((run) => run.plugin.cpuMicrosPerRequest)),
    plainCpuMicrosPerRequest: median(runs.map((run) => plainMean(run, 'cpuMicrosPerRequest'))),
    redisCpuMicrosPerRequest: medianOrNull(runs.map((run) => run.plugin.redisCpuMicrosPerRequest)),
    ratioRange: [Math.min(...ratios), Math.max(...ratios)],
    plainDrift: Math.max(...drifts),
    problems,
    pass: problems.length === 0 && ratio >= scenario.target,
    runs
  }
}

export function skippedScenario (scenario: Scenario, reason: string): ScenarioSummary {
  return {
    id: scenario.id,
    name: scenario.name,
    target: scenario.target,
    skipped: reason,
    rps: 0,
    plainRps: 0,
    ratio: 0,
    p50: 0,
    p99: 0,
    cpuMicrosPerRequest: 0,
    plainCpuMicrosPerRequest: 0,
    redisCpuMicrosPerRequest: null,
    ratioRange: [0, 0],
    plainDrift: 0,
    problems: [],
    pass: false,
    runs: []
  }
}

export function summarizeMemory (message: MemoryMessage): MemorySummary {
  return { ...message, target: memoryTarget, pass: message.bytesPerEntry <= memoryTarget }
}

const columns = [
  'path', 'rps', 'plain rps', 'ratio', 'target', 'p50 ms', 'p99 ms',
  'CPU µs/req (plain)', 'CPU ratio', 'spread', 'result'
]

function scenarioRow (summary: ScenarioSummary): string[] {
  if (summary.skipped !== null) {
    return [summary.name, '-', '-', '-', `≥ ${summary.target.toFixed(2)}`, '-', '-', '-', '-', '-', 'skipped']
  }
  const [low, high] = summary.ratioRange
  const spread = summary.runs.length > 1
    ? `${low.toFixed(2)}-${high.toFixed(2)}, plain ±${(summary.plainDrift * 100).toFixed(1)}%`
    : `plain ±${(summary.plainDrift * 100).toFixed(1)}%`
  let result = summary.pass ? 'pass' : 'FAIL'
  if (summary.problems.length > 0) {
    result = 'INVALID'
  }
  return [
    summary.name,
    summary.rps.toFixed(0),
    summary.plainRps.toFixed(0),
    summary.ratio.toFixed(2),
    `≥ ${summary.target.toFixed(2)}`,
    summary.p50.toFixed(2),
    summary.p99.toFixed(2),
    `${summary.cpuMicrosPerRequest.toFixed(0)} (${summary.plainCpuMicrosPerRequest.toFixed(0)})`,
    (summary.plainCpuMicrosPerRequest / summary.cpuMicrosPerRequest).toFixed(2),
    spread,
    result
  ]
}

function memoryRow (memory: MemorySummary): string[] {
  return [
    `memory per stored entry (${memory.entries} entries)`,
    '-',
    '-',
    `${memory.bytesPerEntry.toFixed(0)} B`,
    `≤ ${memory.target} B`,
    '-',
    '-',
    '-',
    '-',
    '-',
    memory.pass ? 'pass' : 'FAIL'
  ]
}

/** Formats the results as a Markdown table, which also reads as plain text. */
export function formatTable (summaries: ScenarioSummary[], memory: MemorySummary | null): string {
  const rows = summaries.map(scenarioRow)
  if (memory !== null) {
    rows.push(memoryRow(memory))
  }
  const widths = columns.map((column, i) => Math.max(column.length, ...rows.map((row) => (row[i] as string).length)))
  const format = (row: string[]) => `| ${row.map((cell, i) => cell.padEnd(widths[i] as number)).join(' | ')} |`
  const rule = `| ${widths.map((width) => '-'.repeat(width)).join(' | ')} |`
  return [format(columns), rule, ...rows.map(format)].join('\n')
}
