/** A response as the plugin stores and replays it. */
export interface StoredResponse {
  statusCode: number
  headers: Record<string, string | string[]>
  body: string | Buffer
}

/** A stored response with the fingerprint of the request that produced it. */
export interface CompletedRecord {
  state: 'completed'
  fingerprint: string
  response: StoredResponse
}

/** A claim whose handler is still running, with its request's fingerprint. */
export interface InFlightRecord {
  state: 'in-flight'
  fingerprint: string
}

export type IdempotencyRecord = CompletedRecord | InFlightRecord

export interface ClaimOptions {
  /** Random owner token: only its holder may renew, complete or release. */
  token: string
  fingerprint: string
  /** Lease of the claim in ms: it frees itself after this unless renewed. */
  lease: number
  /**
   * Claim the key even over a completed record, which is kept and restored
   * if the claim is released. Manual routes use this to run again.
   */
  takeover: boolean
}

export type ClaimResult =
  | { claimed: true, previous: CompletedRecord | null }
  | { claimed: false, record: IdempotencyRecord }

/**
 * Storage of claims and records. Every method must be atomic for one key, across all
 * processes that share the storage: a claim on a free key succeeds for
 * exactly one caller, and only the holder of a claim's token changes it.
 *
 * A key has at most one live claim and at most one completed record. A claim
 * whose lease ran out counts as absent, and so does a record past its ttl.
 */
export interface IdempotencyStorage {
  /**
   * Claims a free key and returns `{ claimed: true }`. Returns the live
   * record instead when the key is in flight, or completed and `takeover`
   * is false.
   */
  claim (key: string, options: ClaimOptions): Promise<ClaimResult>

  /** Returns the live record of a key, or null. */
  get (key: string): Promise<IdempotencyRecord | null>

  /**
   * Replaces the claim held by `token` with a completed record kept for
   * `ttl` ms. Returns false, and changes nothing, when `token` no longer
   * owns the claim.
   */
  complete (key: string, token: string, record: CompletedRecord, ttl: number): Promise<boolean>

  /** Extends the lease of the claim held by `token` to `lease` ms from now. */
  renew (key: string, token: string, lease: number): Promise<boolean>

  /**
   * Drops the claim held by `token`. A completed record that a takeover
   * claim covered becomes live again.
   */
  release (key: string, token: string): Promise<boolean>
}
