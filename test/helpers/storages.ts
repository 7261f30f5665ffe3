import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import { MemoryStorage, RedisStorage, type IdempotencyStorage } from '../../index'
import { redisUrl } from './redis'

export interface StorageKind {
  name: string
  /** Returns a fresh storage, or null when the test was skipped. */
  create (t: Test): Promise<IdempotencyStorage | null>
}

const memory: StorageKind = {
  name: 'memory',
  async create () {
    return new MemoryStorage()
  }
}

const redis: StorageKind = {
  name: 'redis',
  async create (t) {
    const url = await redisUrl(t)
    if (url === null) {
      return null
    }
    const client = new Redis(url)
    t.teardown(() => client.quit())
    // A prefix per test keeps tests apart on one shared server.
    return new RedisStorage(client, { keyPrefix: `test:${randomUUID()}:` })
  }
}

export const storageKinds = [memory, redis]

/**
 * Runs `body` once per storage kind, each in its own subtest, so one
 * behaviour suite covers every storage.
 */
export function eachStorage (
  t: Test,
  name: string,
  body: (t: Test, storage: IdempotencyStorage) => Promise<void>
): void {
  for (const kind of storageKinds) {
    t.test(`${name} (${kind.name})`, async (t) => {
      const storage = await kind.create(t)
      if (storage === null) {
        return
      }
      await body(t, storage)
    })
  }
}
