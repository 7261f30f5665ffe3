import { readFile } from 'node:fs/promises'
import path from 'node:path'
import { buildDir } from './build'
import { repoRoot } from './processes'

/** The parts of a V8 `.cpuprofile` file that the summary reads. */
interface CpuProfile {
  nodes: ProfileNode[]
  /** Microseconds on the monotonic clock of process.hrtime(). */
  startTime: number
  samples: number[]
  /** Microseconds from the previous sample, or from startTime. */
  timeDeltas: number[]
}

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number }
  children?: number[]
}

/** Start and end of the measured load, in monotonic microseconds. */
export interface TimeWindow {
  start: number
  end: number
}

/** Sampled time of one function, summed over every stack it appears in. */
export interface FrameTime {
  frame: string
  plugin: boolean
  /** Milliseconds sampled in the function itself. */
  selfMs: number
  /** Milliseconds sampled in it and in everything it called. */
  totalMs: number
  /** selfMs and totalMs as shares of busyMs. */
  selfShare: number
  totalShare: number
  /** The callers, nearest first, that most of selfMs came through. */
  topCallers: string[]
}

export interface ProfileSummary {
  file: string
  /** Milliseconds of samples inside the window, idle time included. */
  sampledMs: number
  /** Milliseconds of those samples outside the (idle) frame. */
  busyMs: number
  /**
   * Milliseconds of samples whose nearest caller outside Node's core is the
   * plugin: its own code and the Node functions it calls, such as hashing,
   * but not Fastify or the handler when they run inside a plugin callback.
   */
  pluginOwnMs: number
  frames: FrameTime[]
}

const pluginFiles = [path.join(buildDir, 'index.js'), path.join(buildDir, 'lib') + path.sep]

function filePath (url: string): string {
  return url.startsWith('file://') ? new URL(url).pathname : url
}

function isPluginFile (url: string): boolean {
  const file = filePath(url)
  return pluginFiles.some((prefix) => file === prefix || file.startsWith(prefix))
}

/** The owner of a sample's time: the plugin, other JavaScript, or neither. */
type Owner = 'plugin' | 'other' | 'none'

/**
 * Returns the owner of a frame. Node's own modules and native functions,
 * such as `node:crypto` or `writev`, work for their caller, so they keep
 * the owner of the frame above them.
 */
function ownerOf (node: ProfileNode, callerOwner: Owner): Owner {
  const url = node.callFrame.url
  if (url === '' || url.startsWith('node:')) {
    return callerOwner
  }
  return isPluginFile(url) ? 'plugin' : 'other'
}

/** Returns a file's path relative to the plugin build or the repository. */
function shortPath (url: string): string {
  if (!url.startsWith('file://')) {
    return url
  }
  const file = filePath(url)
  if (file.startsWith(buildDir + path.sep)) {
    return path.relative(buildDir, file)
  }
  return path.relative(repoRoot, file)
}

/**
 * Names a frame by function, file and line. Files of the plugin build are
 * named relative to the build, so lib/replay.js is the build of
 * lib/replay.ts. Line numbers of .ts files are left out, because tsx
 * compiles each file to a single line. An anonymous function is named by
 * its caller.
 */
function frameName (node: ProfileNode, parent: ProfileNode | null): string {
  const { functionName, url, lineNumber } = node.callFrame
  const file = shortPath(url)
  const caller = parent?.callFrame.functionName || 'an anonymous function'
  const name = functionName === '' ? `(anonymous, called by ${caller})` : functionName
  if (file === '') {
    return name
  }
  return file.endsWith('.ts') ? `${name} ${file}` : `${name} ${file}:${lineNumber + 1}`
}

/** Sums the sampled milliseconds per profile node inside `window`. */
function sampledTimes (profile: CpuProfile, window: TimeWindow | null): Map<number, number> {
  const times = new Map<number, number>()
  let time = profile.startTime
  for (let i = 0; i < profile.samples.length; i++) {
    time += profile.timeDeltas[i] ?? 0
    // A sample stands for the time until the next one.
    const span = profile.timeDeltas[i + 1] ?? 0
    if (window === null || (time >= window.start && time < window.end)) {
      const id = profile.samples[i] as number
      times.set(id, (times.get(id) ?? 0) + span / 1000)
    }
  }
  return times
}

/**
 * Sums self and total time per function over the samples in `window`, or
 * over all samples. A function that appears again below itself, as in
 * recursion, counts its subtree once.
 */
export async function summarizeProfile (file: string, window: TimeWindow | null): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile
  const selfTimes = sampledTimes(profile, window)
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const frames = new Map<string, FrameTime>()
  // Self time per caller chain, for each frame.
  const callerTimes = new Map<string, Map<string, number>>()
  let sampledMs = 0
  let busyMs = 0
  let pluginOwnMs = 0

  function visit (node: ProfileNode, stack: string[], open: Set<string>, callerOwner: Owner): number {
    const name = frameName(node, byId.get(parentIds.get(node.id) ?? -1) ?? null)
    const self = selfTimes.get(node.id) ?? 0
    const owner = ownerOf(node, callerOwner)
    sampledMs += self
    if (node.callFrame.functionName !== '(idle)') {
      busyMs += self
    }
    if (owner === 'plugin') {
      pluginOwnMs += self
    }
    let frame = frames.get(name)
    if (frame === undefined) {
      frame = { frame: name, plugin: isPluginFile(node.callFrame.url), selfMs: 0, totalMs: 0, selfShare: 0, totalShare: 0, topCallers: [] }
      frames.set(name, frame)
      callerTimes.set(name, new Map())
    }
    frame.selfMs += self
    if (self > 0) {
      const chains = callerTimes.get(name) as Map<string, number>
      const chain = stack.slice(-callerDepth).reverse().join('\n')
      chains.set(chain, (chains.get(chain) ?? 0) + self)
    }

    const nested = open.has(name)
    open.add(name)
    stack.push(name)
    let total = self
    for (const child of node.children ?? []) {
      total += visit(byId.get(child) as ProfileNode, stack, open, owner)
    }
    stack.pop()
    if (!nested) {
      open.delete(name)
      frame.totalMs += total
    }
    return total
  }

  const parentIds = new Map<number, number>()
  for (const node of profile.nodes) {
    for (const child of node.children ?? []) {
      parentIds.set(child, node.id)
    }
  }
  visit(profile.nodes[0] as ProfileNode, [], new Set(), 'none')
  const list = [...frames.values()]
  for (const frame of list) {
    frame.selfShare = frame.selfMs / busyMs
    frame.totalShare = frame.totalMs / busyMs
    frame.topCallers = topChain(callerTimes.get(frame.frame) as Map<string, number>)
  }
  list.sort((a, b) => b.selfMs - a.selfMs)
  return { file, sampledMs, busyMs, pluginOwnMs, frames: list }
}

const callerDepth = 6

function topChain (chains: Map<string, number>): string[] {
  let top = ''
  let topMs = -1
  for (const [chain, ms] of chains) {
    if (ms > topMs) {
      top = chain
      topMs = ms
    }
  }
  return top === '' ? [] : top.split('\n')
}

function percent (share: number): string {
  return `${(share * 100).toFixed(1)}%`.padStart(6)
}

// Frames below these shares of busy time are too small to explain.
const callerChainShare = 0.01
const minPluginShare = 0.001

/**
 * Formats the top frames by self time, each large one with the callers
 * most of its time came through, and the plugin's frames by total time.
 */
export function formatProfile (summary: ProfileSummary, limit: number): string {
  const lines = [
    `${path.relative(repoRoot, summary.file)}: ${summary.busyMs.toFixed(0)} ms busy ` +
    `of ${summary.sampledMs.toFixed(0)} ms sampled during the measured load`,
    `  the plugin's own work: ${percent(summary.pluginOwnMs / summary.busyMs).trim()} of busy time ` +
    '(its code and the Node functions it calls, without Fastify and the handler)',
    `  top ${limit} frames by self time, as shares of busy time (plugin frames marked *):`
  ]
  const busyFrames = summary.frames.filter((frame) => frame.frame !== '(idle)')
  for (const frame of busyFrames.slice(0, limit)) {
    lines.push(`   ${percent(frame.selfShare)} ${frame.plugin ? '*' : ' '} ${frame.frame}`)
    const fromRoot = frame.topCallers.length === 1 && frame.topCallers[0] === '(root)'
    if (frame.topCallers.length > 0 && !fromRoot && frame.selfShare >= callerChainShare) {
      lines.push(`            mostly called by ${frame.topCallers.join(' < ')}`)
    }
  }
  lines.push('  plugin frames by total time, self / total:')
  const pluginFrames = summary.frames.filter((frame) => frame.plugin && frame.totalShare >= minPluginShare)
  pluginFrames.sort((a, b) => b.totalMs - a.totalMs)
  for (const frame of pluginFrames.slice(0, limit)) {
    lines.push(`   ${percent(frame.selfShare)} / ${percent(frame.totalShare)}  ${frame.frame}`)
  }
  return lines.join('\n')
}
