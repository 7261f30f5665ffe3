// Measures the heap that MemoryStorage takes per stored response, in a
// child process started by bench/run.ts with --expose-gc. It stores
// BENCH_MEMORY_ENTRIES small responses with claim and complete, as the
// plugin does, and sends the heap growth to the parent over IPC. The
// storage comes from the compiled plugin at BENCH_PLUGIN.
import { createHash, randomUUID } from 'node:crypto'
import type { MemoryStorage } from '../lib/memory-storage'

export interface MemoryMessage {
  type: 'memory'
  entries: number
  /** heapUsed after a full GC, before and after storing, in bytes. */
  heapBefore: number
  heapAfter: number
  /** UTF-8 bytes of all stored bodies together. */
  bodyBytes: number
  /** Heap growth per entry beyond the body bytes. */
  bytesPerEntry: number
}

// Fastify sets this header from one constant string, so all stored
// responses share it, as they do here.
const contentType = 'application/json; charset=utf-8'
const lease = 30_000
const ttl = 24 * 60 * 60 * 1000

/** Returns a 43-character base64url SHA-256, as the default encoder does. */
function digest (text: string): string {
  return createHash('sha256').update(text).digest('base64url')
}

async function storeEntry (storage: MemoryStorage, index: number): Promise<number> {
  const key = digest(`key ${index}`)
  const fingerprint = digest(`fingerprint ${index}`)
  const token = randomUUID()
  const body = `{"id":${index}}`
  await storage.claim(key, { token, fingerprint, lease, takeover: false })
  const response = {
    statusCode: 201,
    headers: { 'content-type': contentType },
    body
  }
  const stored = await storage.complete(key, token, { state: 'completed', fingerprint, response }, ttl)
  if (!stored) {
    throw new Error(`MemoryStorage did not store entry ${index}`)
  }
  return Buffer.byteLength(body)
}

function heapAfterGc (collect: () => void): number {
  collect()
  collect()
  return process.memoryUsage().heapUsed
}

async function main () {
  const collect = globalThis.gc
  if (collect === undefined) {
    throw new Error('bench/memory.ts needs node --expose-gc')
  }
  const entries = Number(process.env.BENCH_MEMORY_ENTRIES)
  if (!Number.isSafeInteger(entries) || entries < 1) {
    throw new Error(`Invalid BENCH_MEMORY_ENTRIES: ${process.env.BENCH_MEMORY_ENTRIES}`)
  }

  const plugin = require(process.env.BENCH_PLUGIN ?? '') as { MemoryStorage: typeof MemoryStorage }
  const storage = new plugin.MemoryStorage({ maxEntries: entries })
  const heapBefore = heapAfterGc(collect)
  let bodyBytes = 0
  for (let i = 0; i < entries; i++) {
    bodyBytes += await storeEntry(storage, i)
  }
  const heapAfter = heapAfterGc(collect)
  if (storage.size !== entries) {
    throw new Error(`MemoryStorage contains ${storage.size} entries, expected ${entries}`)
  }

  const bytesPerEntry = (heapAfter - heapBefore - bodyBytes) / entries
  const message: MemoryMessage = { type: 'memory', entries, heapBefore, heapAfter, bodyBytes, bytesPerEntry }
  process.send?.(message)
}

process.on('message', (message: { type?: string }) => {
  if (message.type === 'stop') {
    process.exit(0)
  }
})

main().catch((error) => {
  console.error('bench memory measurement failed:', error)
  process.exit(1)
})
