import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type {
  ClaimOptions,
  CompletedRecord,
  IdempotencyRecord,
  IdempotencyStorage,
  StoredResponse
} from './storage'

/** One rule of the storage interface, checked against a storage. */
export interface StorageContractCase {
  name: string
  /** Rejects with an `AssertionError` when the storage breaks the rule. */
  run (storage: IdempotencyStorage): Promise<void>
}

/**
 * Returns the cases that every `IdempotencyStorage` must pass, for any test
 * runner. Each case uses its own random keys, so all cases may share one
 * storage, also in parallel. Expiry cases use leases of 50 to 800 ms and
 * real sleeps, so they need a storage whose clock runs in real time.
 */
export function storageContract (): StorageContractCase[] {
  return [
    ...claimCases,
    ...responseCases,
    ...tokenCases,
    ...expiryCases,
    ...takeoverCases
  ]
}

/** A lease long enough that no case waits for it to run out. */
const longLease = 60_000
const longTtl = 60_000
/** A lease or ttl short enough for a case to sleep past it. */
const shortLease = 50
/** Sleep that outlasts `shortLease` even on a busy machine. */
const pastShortLease = 150

function uniqueKey (): string {
  return `contract:${randomUUID()}`
}

function claimOptions (overrides: Partial<ClaimOptions> = {}): ClaimOptions {
  return {
    token: randomUUID(),
    fingerprint: `fingerprint-${randomUUID()}`,
    lease: longLease,
    takeover: false,
    ...overrides
  }
}

function completedRecord (response: Partial<StoredResponse> = {}): CompletedRecord {
  return {
    state: 'completed',
    fingerprint: `fingerprint-${randomUUID()}`,
    response: {
      statusCode: 201,
      headers: { 'content-type': 'application/json' },
      body: '{"id":1}',
      ...response
    }
  }
}

/** Claims a free key and completes it, as one handler run would. */
async function completeKey (
  storage: IdempotencyStorage,
  key: string,
  record: CompletedRecord,
  ttl = longTtl
): Promise<void> {
  const options = claimOptions({ fingerprint: record.fingerprint })
  const result = await storage.claim(key, options)
  assert.equal(result.claimed, true, 'claim before complete failed')
  assert.equal(await storage.complete(key, options.token, record, ttl), true)
}

/**
 * Asserts that `actual` is `expected` byte for byte. A body may come back
 * as a Buffer where a string went in, so bodies are compared as bytes.
 */
function assertCompleted (actual: IdempotencyRecord | null, expected: CompletedRecord): void {
  assert.ok(actual !== null, 'expected a completed record, got null')
  assert.equal(actual.state, 'completed')
  assert.ok(actual.state === 'completed')
  assert.equal(actual.fingerprint, expected.fingerprint)
  assert.equal(actual.response.statusCode, expected.response.statusCode)
  assert.deepEqual(actual.response.headers, expected.response.headers)
  assert.deepEqual(Buffer.from(actual.response.body), Buffer.from(expected.response.body))
}

function assertInFlight (actual: IdempotencyRecord | null, fingerprint: string): void {
  assert.deepEqual(actual, { state: 'in-flight', fingerprint })
}

const claimCases: StorageContractCase[] = [
  {
    name: 'claim on a free key succeeds once',
    async run (storage) {
      const key = uniqueKey()
      const first = claimOptions()
      assert.deepEqual(await storage.claim(key, first), { claimed: true, previous: null })

      const second = await storage.claim(key, claimOptions())
      assert.deepEqual(second, {
        claimed: false,
        record: { state: 'in-flight', fingerprint: first.fingerprint }
      })
    }
  },
  {
    name: 'get of a free key returns null',
    async run (storage) {
      assert.equal(await storage.get(uniqueKey()), null)
    }
  },
  {
    name: 'get of a claimed key returns its fingerprint',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions()
      await storage.claim(key, options)
      assertInFlight(await storage.get(key), options.fingerprint)
    }
  },
  {
    name: 'concurrent claims have one winner',
    async run (storage) {
      const key = uniqueKey()
      const claims = Array.from({ length: 50 }, () => claimOptions())
      const results = await Promise.all(claims.map((options) => storage.claim(key, options)))

      const winners = claims.filter((_, i) => results[i]?.claimed === true)
      assert.equal(winners.length, 1)
      const winner = winners[0]
      assert.ok(winner !== undefined)
      for (const result of results) {
        if (!result.claimed) {
          assertInFlight(result.record, winner.fingerprint)
        }
      }
      assertInFlight(await storage.get(key), winner.fingerprint)
    }
  },
  {
    name: 'takeover does not claim an in-flight key',
    async run (storage) {
      const key = uniqueKey()
      const first = claimOptions()
      await storage.claim(key, first)

      const result = await storage.claim(key, claimOptions({ takeover: true }))
      assert.equal(result.claimed, false)
      assert.ok(!result.claimed)
      assertInFlight(result.record, first.fingerprint)
    }
  },
  {
    name: 'release frees a claimed key',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions()
      await storage.claim(key, options)

      assert.equal(await storage.release(key, options.token), true)
      assert.equal(await storage.get(key), null)
      assert.equal(await storage.release(key, options.token), false)
      const next = await storage.claim(key, claimOptions())
      assert.deepEqual(next, { claimed: true, previous: null })
    }
  }
]

/** Bytes 0 to 255, which no text encoding keeps intact. */
const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i))

const responses: Array<[string, StoredResponse]> = [
  ['string body', {
    statusCode: 200,
    headers: { 'content-type': 'text/plain' },
    body: 'plain text'
  }],
  ['non-ASCII string body', {
    statusCode: 201,
    headers: { 'content-type': 'text/plain; charset=utf-8' },
    body: 'héllo ✓ 😀'
  }],
  ['Buffer body', {
    statusCode: 200,
    headers: { 'content-type': 'application/json' },
    body: Buffer.from('{"ok":true}')
  }],
  ['empty string body', { statusCode: 204, headers: {}, body: '' }],
  ['empty Buffer body', {
    statusCode: 200,
    headers: { 'content-length': '0' },
    body: Buffer.alloc(0)
  }],
  ['bytes 0 to 255', {
    statusCode: 200,
    headers: { 'content-type': 'application/octet-stream' },
    body: allBytes
  }],
  ['repeated headers', {
    statusCode: 302,
    headers: {
      location: '/next',
      'set-cookie': ['a=1; Path=/', 'b=2; HttpOnly', 'a=1; Path=/'],
      'x-empty': ''
    },
    body: 'redirect'
  }]
]

const responseCases = responses.map(([label, response]): StorageContractCase => ({
  name: `completed record keeps ${label}`,
  async run (storage) {
    const key = uniqueKey()
    const record = completedRecord(response)
    await completeKey(storage, key, record)

    assertCompleted(await storage.get(key), record)
    const result = await storage.claim(key, claimOptions())
    assert.equal(result.claimed, false)
    assert.ok(!result.claimed)
    assertCompleted(result.record, record)
  }
}))

const tokenCases: StorageContractCase[] = [
  {
    name: 'complete with wrong token fails',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions()
      await storage.claim(key, options)

      assert.equal(await storage.complete(key, randomUUID(), completedRecord(), longTtl), false)
      assertInFlight(await storage.get(key), options.fingerprint)

      const record = completedRecord()
      assert.equal(await storage.complete(key, options.token, record, longTtl), true)
      assertCompleted(await storage.get(key), record)
    }
  },
  {
    name: 'release with wrong token fails',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions()
      await storage.claim(key, options)

      assert.equal(await storage.release(key, randomUUID()), false)
      assertInFlight(await storage.get(key), options.fingerprint)
      assert.equal(await storage.release(key, options.token), true)
    }
  },
  {
    name: 'renew with wrong token fails',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions({ lease: shortLease })
      await storage.claim(key, options)

      assert.equal(await storage.renew(key, randomUUID(), longLease), false)
      assertInFlight(await storage.get(key), options.fingerprint)
      // The lease still ends on time, so the failed renew changed nothing.
      await sleep(pastShortLease)
      assert.equal(await storage.get(key), null)
    }
  },
  {
    name: 'token methods fail on a free key',
    async run (storage) {
      const key = uniqueKey()
      const token = randomUUID()
      assert.equal(await storage.complete(key, token, completedRecord(), longTtl), false)
      assert.equal(await storage.renew(key, token, longLease), false)
      assert.equal(await storage.release(key, token), false)
      assert.equal(await storage.get(key), null)
    }
  },
  {
    name: 'token methods fail on a completed key',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions()
      await storage.claim(key, options)
      const record = completedRecord()
      assert.equal(await storage.complete(key, options.token, record, longTtl), true)

      // Complete ended the claim, so its token no longer matches a claim.
      assert.equal(await storage.complete(key, options.token, completedRecord(), longTtl), false)
      assert.equal(await storage.renew(key, options.token, longLease), false)
      assert.equal(await storage.release(key, options.token), false)
      assertCompleted(await storage.get(key), record)
    }
  }
]

const expiryCases: StorageContractCase[] = [
  {
    name: 'expired claim cannot complete',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions({ lease: shortLease })
      await storage.claim(key, options)
      await sleep(pastShortLease)

      assert.equal(await storage.complete(key, options.token, completedRecord(), longTtl), false)
      assert.equal(await storage.renew(key, options.token, longLease), false)
      assert.equal(await storage.release(key, options.token), false)
      assert.equal(await storage.get(key), null)
    }
  },
  {
    name: 'expired takeover cannot complete',
    async run (storage) {
      const key = uniqueKey()
      const record = completedRecord()
      await completeKey(storage, key, record, longTtl)
      const takeover = claimOptions({ lease: shortLease, takeover: true })
      await storage.claim(key, takeover)
      await sleep(pastShortLease)

      assert.equal(await storage.complete(key, takeover.token, completedRecord(), longTtl), false)
      const stored = await storage.get(key)
      assert.equal(stored?.fingerprint, record.fingerprint)
    }
  },
  {
    name: 'expired lease frees a claim',
    async run (storage) {
      const key = uniqueKey()
      await storage.claim(key, claimOptions({ lease: shortLease }))
      await sleep(pastShortLease)

      assert.equal(await storage.get(key), null)
      const next = await storage.claim(key, claimOptions())
      assert.deepEqual(next, { claimed: true, previous: null })
    }
  },
  {
    name: 'renew extends a lease',
    async run (storage) {
      const key = uniqueKey()
      const options = claimOptions({ lease: 300 })
      await storage.claim(key, options)
      await sleep(50)

      assert.equal(await storage.renew(key, options.token, 800), true)
      // Past the first lease but well within the renewed one.
      await sleep(400)
      assertInFlight(await storage.get(key), options.fingerprint)

      await sleep(600)
      assert.equal(await storage.get(key), null)
    }
  },
  {
    name: 'expired ttl drops a completed record',
    async run (storage) {
      const key = uniqueKey()
      const record = completedRecord()
      await completeKey(storage, key, record, shortLease)
      await sleep(pastShortLease)

      assert.equal(await storage.get(key), null)
      const next = await storage.claim(key, claimOptions())
      assert.deepEqual(next, { claimed: true, previous: null })
    }
  },
  {
    name: 'old token fails after expiry and reclaim',
    async run (storage) {
      const key = uniqueKey()
      const old = claimOptions({ lease: shortLease })
      await storage.claim(key, old)
      await sleep(pastShortLease)
      const current = claimOptions()
      assert.deepEqual(await storage.claim(key, current), { claimed: true, previous: null })

      assert.equal(await storage.complete(key, old.token, completedRecord(), longTtl), false)
      assert.equal(await storage.renew(key, old.token, longLease), false)
      assert.equal(await storage.release(key, old.token), false)
      assertInFlight(await storage.get(key), current.fingerprint)

      const record = completedRecord()
      assert.equal(await storage.complete(key, current.token, record, longTtl), true)
      assertCompleted(await storage.get(key), record)
    }
  }
]

const takeoverCases: StorageContractCase[] = [
  {
    name: 'claim of a completed key returns it',
    async run (storage) {
      const key = uniqueKey()
      const record = completedRecord()
      await completeKey(storage, key, record)

      const result = await storage.claim(key, claimOptions({ takeover: false }))
      assert.equal(result.claimed, false)
      assert.ok(!result.claimed)
      assertCompleted(result.record, record)
    }
  },
  {
    name: 'takeover keeps record and release restores it',
    async run (storage) {
      const key = uniqueKey()
      const record = completedRecord()
      await completeKey(storage, key, record)

      const takeover = claimOptions({ takeover: true })
      const result = await storage.claim(key, takeover)
      assert.equal(result.claimed, true)
      assert.ok(result.claimed)
      assert.ok(result.previous !== null, 'takeover returned no previous record')
      assertCompleted(result.previous, record)
      assertInFlight(await storage.get(key), takeover.fingerprint)

      assert.equal(await storage.release(key, takeover.token), true)
      assertCompleted(await storage.get(key), record)
    }
  },
  {
    name: 'takeover then complete replaces record',
    async run (storage) {
      const key = uniqueKey()
      await completeKey(storage, key, completedRecord())
      const takeover = claimOptions({ takeover: true })
      await storage.claim(key, takeover)

      const replacement = completedRecord({ statusCode: 200, body: 'second run' })
      assert.equal(await storage.complete(key, takeover.token, replacement, longTtl), true)
      assertCompleted(await storage.get(key), replacement)
    }
  },
  {
    name: 'expired takeover restores the record',
    async run (storage) {
      const key = uniqueKey()
      const record = completedRecord()
      await completeKey(storage, key, record)
      const takeover = claimOptions({ lease: shortLease, takeover: true })
      await storage.claim(key, takeover)
      await sleep(pastShortLease)

      assertCompleted(await storage.get(key), record)
      const next = await storage.claim(key, claimOptions())
      assert.equal(next.claimed, false)
      assert.ok(!next.claimed)
      assertCompleted(next.record, record)
    }
  },
  {
    name: 'concurrent takeovers have one winner',
    async run (storage) {
      const key = uniqueKey()
      const record = completedRecord()
      await completeKey(storage, key, record)

      const claims = Array.from({ length: 50 }, () => claimOptions({ takeover: true }))
      const results = await Promise.all(claims.map((options) => storage.claim(key, options)))
      const winners = claims.filter((_, i) => results[i]?.claimed === true)
      assert.equal(winners.length, 1)
      assert.ok(winners[0] !== undefined)
      assertInFlight(await storage.get(key), winners[0].fingerprint)
    }
  }
]
