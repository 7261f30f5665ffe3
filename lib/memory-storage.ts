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
  key: string
  claim: Claim | null
  completed: CompletedRecord | null
  completedEnd: number
  /** Neighbours in the recency list, which runs from oldest to newest. */
  older: Entry | null
  newer: Entry | null
}

const defaultMaxEntries = 10_000

/**
 * Storage in this process's memory, for one server process. Entries expire
 * when they are read, so no timer runs per key, and the map never grows
 * past `maxEntries`: the least recently used keys are evicted first, except
 * keys whose handler is still running.
 *
 * Recency is a linked list through the entries. Evicting by iterating the
 * Map from its oldest key costs time in proportion to the keys deleted
 * before it, because V8 leaves a hole per deleted key until the table is
 * rebuilt, and every eviction and every touch deletes one.
 */
export class MemoryStorage implements IdempotencyStorage {
  readonly maxEntries: number
  private readonly entries = new Map<string, Entry>()
  private oldest: Entry | null = null
  private newest: Entry | null = null

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

    this.insert({ key, claim, completed: null, completedEnd: 0, older: null, newer: null }, now)
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
      this.remove(entry)
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
    if (recordOf(entry, now) === null) {
      this.remove(entry)
      return null
    }
    if (entry !== this.newest) {
      this.unlink(entry)
      this.append(entry)
    }
    return entry
  }

  private insert (entry: Entry, now: number): void {
    this.entries.set(entry.key, entry)
    this.append(entry)
    if (this.entries.size > this.maxEntries) {
      this.evict(now)
    }
  }

  /**
   * Drops least recently used entries until the map fits `maxEntries`.
   * A running claim is never evicted, because that would let a duplicate
   * run its handler a second time, so a burst of running claims can hold the
   * map above the bound until they finish.
   */
  private evict (now: number): void {
    let entry = this.oldest
    while (entry !== null && this.entries.size > this.maxEntries) {
      const newer = entry.newer
      if (entry.claim === null || entry.claim.leaseEnd <= now) {
        this.remove(entry)
      }
      entry = newer
    }
  }

  private remove (entry: Entry): void {
    this.entries.delete(entry.key)
    this.unlink(entry)
  }

  private append (entry: Entry): void {
    entry.older = this.newest
    entry.newer = null
    if (this.newest === null) {
      this.oldest = entry
    } else {
      this.newest.newer = entry
    }
    this.newest = entry
  }

  private unlink (entry: Entry): void {
    if (entry.older === null) {
      this.oldest = entry.newer
    } else {
      entry.older.newer = entry.newer
    }
    if (entry.newer === null) {
      this.newest = entry.older
    } else {
      entry.newer.older = entry.older
    }
    entry.older = null
    entry.newer = null
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
