import type {
  ClaimOptions,
  ClaimResult,
  CompletedRecord,
  IdempotencyRecord,
  IdempotencyStorage
} from './storage'

export interface MemoryStorageOptions {
  /** Maximum number of keys kept. The least recently used are evicted first. */
  maxEntries?: number
}

interface Claim {
  token: string
  fingerprint: string
  leaseEnd: number
}

interface Entry {
  claim: Claim | null
  completed: CompletedRecord | null
  completedEnd: number
}

const defaultMaxEntries = 10_000

/**
 * Storage in this process's memory, for one server process. Entries expire
 * when they are read, so no timer runs per key, and the map never grows
 * past `maxEntries`: the least recently used keys are evicted first, except
 * keys whose handler is still running.
 */
export class MemoryStorage implements IdempotencyStorage {
  readonly maxEntries: number
  private readonly entries = new Map<string, Entry>()
  private evictionCursor: Iterator<[string, Entry]> | null = null

  constructor (options: MemoryStorageOptions = {}) {
    const maxEntries = options.maxEntries ?? defaultMaxEntries
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new TypeError(`Invalid MemoryStorage maxEntries: ${String(maxEntries)}`)
    }
    this.maxEntries = maxEntries
  }

  get size (): number {
    return this.entries.size
  }

  async claim (key: string, options: ClaimOptions): Promise<ClaimResult> {
    const now = Date.now()
    const entry = this.touch(key, now)
    const record = entry && recordOf(entry, now)

    if (record?.state === 'in-flight') {
      return { claimed: false, record }
    }
    if (record && !options.takeover) {
      return { claimed: false, record }
    }

    const claim = {
      token: options.token,
      fingerprint: options.fingerprint,
      leaseEnd: now + options.lease
    }
    if (entry && record) {
      entry.claim = claim
      return { claimed: true, previous: record }
    }

    this.insert(key, { claim, completed: null, completedEnd: 0 })
    return { claimed: true, previous: null }
  }

  async get (key: string): Promise<IdempotencyRecord | null> {
    const now = Date.now()
    const entry = this.touch(key, now)
    return entry && recordOf(entry, now)
  }

  async complete (key: string, token: string, record: CompletedRecord, ttl: number): Promise<boolean> {
    const now = Date.now()
    const entry = this.ownedEntry(key, token, now)
    if (entry === null) {
      return false
    }
    entry.claim = null
    entry.completed = record
    entry.completedEnd = now + ttl
    return true
  }

  async renew (key: string, token: string, lease: number): Promise<boolean> {
    const now = Date.now()
    const entry = this.ownedEntry(key, token, now)
    if (entry === null) {
      return false
    }
    (entry.claim as Claim).leaseEnd = now + lease
    return true
  }

  async release (key: string, token: string): Promise<boolean> {
    const now = Date.now()
    const entry = this.ownedEntry(key, token, now)
    if (entry === null) {
      return false
    }
    entry.claim = null
    if (entry.completedEnd <= now) {
      this.entries.delete(key)
    }
    return true
  }

  /** Returns the entry whose live claim `token` holds, or null. */
  private ownedEntry (key: string, token: string, now: number): Entry | null {
    const entry = this.entries.get(key)
    const claim = entry?.claim
    if (entry === undefined || claim?.token !== token || claim.leaseEnd <= now) {
      return null
    }
    return entry
  }

  /** Returns the entry of a live key and marks it as most recently used. */
  private touch (key: string, now: number): Entry | null {
    const entry = this.entries.get(key)
    if (entry === undefined) {
      return null
    }
    this.entries.delete(key)
    if (recordOf(entry, now) === null) {
      return null
    }
    this.entries.set(key, entry)
    return entry
  }

  private insert (key: string, entry: Entry): void {
    this.entries.set(key, entry)
    if (this.entries.size > this.maxEntries) {
      this.evict()
    }
  }

  /**
   * Drops least recently used entries until the map fits `maxEntries`.
   * A running claim is never evicted, because that would let a duplicate
   * run its handler a second time, so a burst of running claims can hold the
   * map above the bound until they finish.
   *
   * The scan resumes where the last one stopped. A Map keeps the slots of
   * deleted keys until it rehashes, and a scan from the start would step over
   * every key evicted since then, which made each eviction cost O(maxEntries).
   */
  private evict (): void {
    const now = Date.now()
    // Each entry is visited at most once, so a map of running claims ends it.
    let unvisited = this.entries.size
    while (this.entries.size > this.maxEntries && unvisited > 0) {
      let next = this.evictionCursor?.next()
      if (next === undefined || next.done === true) {
        this.evictionCursor = this.entries.entries()
        next = this.evictionCursor.next()
      }
      if (next.done === true) {
        return
      }
      unvisited--
      const [key, entry] = next.value
      if (recordOf(entry, now)?.state !== 'in-flight') {
        this.entries.delete(key)
      }
    }
  }
}

function recordOf (entry: Entry, now: number): IdempotencyRecord | null {
  if (entry.claim !== null && entry.claim.leaseEnd > now) {
    return { state: 'in-flight', fingerprint: entry.claim.fingerprint }
  }
  if (entry.completed !== null && entry.completedEnd > now) {
    return entry.completed
  }
  return null
}
