import type { Cluster, Redis } from 'ioredis'
import type {
  ClaimOptions,
  ClaimResult,
  CompletedRecord,
  IdempotencyRecord,
  IdempotencyStorage,
  StoredResponse
} from './storage'

export interface RedisStorageOptions {
  /** Prefix of every Redis key that this storage writes. */
  keyPrefix?: string
}

const defaultKeyPrefix = 'idempotency:'

/*
 * Each storage key is one Redis hash, so every script touches exactly one
 * key and runs on one Cluster slot. The hash fields:
 *
 *   token, fingerprint, leaseEnd               the claim, if any
 *   completedFingerprint, response, completedEnd   the completed record
 *
 * Ends are absolute times in ms taken from the Redis server clock with TIME,
 * so processes on machines with skewed clocks agree on them. A part whose
 * end has passed counts as absent even while its fields remain, and the key
 * expires at the later of the two ends, so Redis deletes dead keys itself.
 *
 * NOTE: after a failover the new primary's clock decides, so clock skew
 * between Redis nodes shortens or lengthens the live leases and records.
 */
const luaHelpers = `
local function nowMs ()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

local function readState (key, now)
  local fields = redis.call('HMGET', key, 'token', 'fingerprint', 'leaseEnd',
    'completedFingerprint', 'response', 'completedEnd')
  local state = {}
  if fields[1] and tonumber(fields[3]) > now then
    state.token = fields[1]
    state.fingerprint = fields[2]
    state.leaseEnd = tonumber(fields[3])
  end
  if fields[5] and tonumber(fields[6]) > now then
    state.completedFingerprint = fields[4]
    state.response = fields[5]
    state.completedEnd = tonumber(fields[6])
  end
  return state
end

-- PEXPIREAT with an end in the past deletes the key, which is what a key
-- with no live part needs.
local function expireAtLatestEnd (key, state)
  local latest = math.max(state.leaseEnd or 0, state.completedEnd or 0)
  redis.call('PEXPIREAT', key, latest)
end
`

// Every reply of claim and get is an array led by a state name, with no
// nil or false in it, so one parser reads it under RESP2 and RESP3 alike.
const claimLua = luaHelpers + `
local key = KEYS[1]
local now = nowMs()
local state = readState(key, now)
if state.token then
  return { 'in-flight', state.fingerprint }
end
if state.response and ARGV[4] ~= '1' then
  return { 'completed', state.completedFingerprint, state.response }
end
-- Drop the fields of dead parts, such as an expired response, so they
-- take no memory while the new claim lives.
if not state.response then
  redis.call('DEL', key)
end
state.leaseEnd = now + tonumber(ARGV[3])
redis.call('HSET', key, 'token', ARGV[1], 'fingerprint', ARGV[2],
  'leaseEnd', state.leaseEnd)
expireAtLatestEnd(key, state)
if state.response then
  return { 'claimed', state.completedFingerprint, state.response }
end
return { 'claimed' }
`

const getLua = luaHelpers + `
local state = readState(KEYS[1], nowMs())
if state.token then
  return { 'in-flight', state.fingerprint }
end
if state.response then
  return { 'completed', state.completedFingerprint, state.response }
end
return { 'none' }
`

const completeLua = luaHelpers + `
local key = KEYS[1]
local now = nowMs()
local state = readState(key, now)
if state.token ~= ARGV[1] then
  return 0
end
local completed = { completedEnd = now + tonumber(ARGV[4]) }
redis.call('DEL', key)
redis.call('HSET', key, 'completedFingerprint', ARGV[2],
  'response', ARGV[3], 'completedEnd', completed.completedEnd)
expireAtLatestEnd(key, completed)
return 1
`

const renewLua = luaHelpers + `
local key = KEYS[1]
local now = nowMs()
local state = readState(key, now)
if state.token ~= ARGV[1] then
  return 0
end
state.leaseEnd = now + tonumber(ARGV[2])
redis.call('HSET', key, 'leaseEnd', state.leaseEnd)
expireAtLatestEnd(key, state)
return 1
`

const releaseLua = luaHelpers + `
local key = KEYS[1]
local state = readState(key, nowMs())
if state.token ~= ARGV[1] then
  return 0
end
redis.call('HDEL', key, 'token', 'fingerprint', 'leaseEnd')
state.leaseEnd = nil
expireAtLatestEnd(key, state)
return 1
`

const scripts = {
  idempotencyClaim: claimLua,
  idempotencyGet: getLua,
  idempotencyComplete: completeLua,
  idempotencyRenew: renewLua,
  idempotencyRelease: releaseLua
}

/**
 * Commands that `defineCommand` adds to the client. The `Buffer` variants
 * reply with Buffers in place of strings, so response bytes survive.
 */
interface ScriptCommands {
  idempotencyClaimBuffer (key: string, token: string, fingerprint: string, lease: number, takeover: string): Promise<unknown>
  idempotencyGetBuffer (key: string): Promise<unknown>
  idempotencyComplete (key: string, token: string, fingerprint: string, response: Buffer, ttl: number): Promise<unknown>
  idempotencyRenew (key: string, token: string, lease: number): Promise<unknown>
  idempotencyRelease (key: string, token: string): Promise<unknown>
}

/**
 * Storage in Redis, shared by every process that uses the same Redis server
 * or Cluster. Each method is one Lua script on one key, so it is atomic and
 * costs one round trip: ioredis sends EVALSHA, or EVAL on a connection's
 * first call, and retries once with EVAL if the server's script cache was
 * flushed. Redis errors reject the returned promise.
 *
 * Tested with Redis 7.0. The scripts write after calling TIME, which needs
 * script effects replication, the default since Redis 5.
 */
export class RedisStorage implements IdempotencyStorage {
  readonly keyPrefix: string
  private readonly commands: ScriptCommands

  constructor (client: Redis | Cluster, options: RedisStorageOptions = {}) {
    const keyPrefix = options.keyPrefix ?? defaultKeyPrefix
    if (typeof keyPrefix !== 'string') {
      throw new TypeError(`Invalid RedisStorage keyPrefix: expected a string, got ${typeof keyPrefix}`)
    }
    this.keyPrefix = keyPrefix
    defineCommands(client)
    this.commands = client as unknown as ScriptCommands
  }

  async claim (key: string, options: ClaimOptions): Promise<ClaimResult> {
    checkMilliseconds('lease', options.lease)
    const reply = await this.commands.idempotencyClaimBuffer(
      this.keyPrefix + key,
      options.token,
      options.fingerprint,
      options.lease,
      options.takeover ? '1' : '0'
    )
    const [state, ...fields] = replyFields('idempotencyClaim', reply)
    if (state !== 'claimed') {
      return { claimed: false, record: parseRecord(state, fields) }
    }
    const previous = fields.length === 0 ? null : parseCompleted(fields)
    return { claimed: true, previous }
  }

  async get (key: string): Promise<IdempotencyRecord | null> {
    const reply = await this.commands.idempotencyGetBuffer(this.keyPrefix + key)
    const [state, ...fields] = replyFields('idempotencyGet', reply)
    return state === 'none' ? null : parseRecord(state, fields)
  }

  async complete (key: string, token: string, record: CompletedRecord, ttl: number): Promise<boolean> {
    checkMilliseconds('ttl', ttl)
    const reply = await this.commands.idempotencyComplete(
      this.keyPrefix + key,
      token,
      record.fingerprint,
      encodeResponse(record.response),
      ttl
    )
    return reply === 1
  }

  async renew (key: string, token: string, lease: number): Promise<boolean> {
    checkMilliseconds('lease', lease)
    const reply = await this.commands.idempotencyRenew(this.keyPrefix + key, token, lease)
    return reply === 1
  }

  async release (key: string, token: string): Promise<boolean> {
    const reply = await this.commands.idempotencyRelease(this.keyPrefix + key, token)
    return reply === 1
  }
}

/**
 * Defines the scripts on a client once. Several storages may share one
 * client, so an existing definition with the same script is reused, but
 * any other command of the same name is an error.
 */
function defineCommands (client: Redis | Cluster): void {
  // ioredis keeps defined scripts in scriptsSet, which its types mark internal.
  const defined = client.scriptsSet as Record<string, { lua?: unknown } | undefined>
  const missing = Object.entries(scripts).filter(([name, lua]) => {
    const existing = defined[name]
    if (existing === undefined && !(name in client)) {
      return true
    }
    if (existing?.lua !== lua) {
      throw new Error(
        `Redis command ${name} is already defined on this client with a ` +
        'different script. Give RedisStorage a client of its own'
      )
    }
    return false
  })
  for (const [name, lua] of missing) {
    client.defineCommand(name, { numberOfKeys: 1, lua })
  }
}

/**
 * Rejects values that Lua could not turn into an exact integer end time,
 * such as NaN, fractions or numbers past 2^53.
 */
function checkMilliseconds (name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new TypeError(`Invalid ${name}: expected a non-negative integer of milliseconds, got ${String(value)}`)
  }
}

/** Splits a script reply into its state name and its raw Buffer fields. */
function replyFields (command: string, reply: unknown): [string, ...Buffer[]] {
  if (!Array.isArray(reply) || !reply.every(Buffer.isBuffer) || reply.length === 0) {
    throw new Error(`Unexpected reply from Redis script ${command}: ${String(reply)}`)
  }
  const [state, ...fields] = reply as Buffer[]
  return [String(state), ...fields]
}

function parseRecord (state: string, fields: Buffer[]): IdempotencyRecord {
  if (state === 'completed') {
    return parseCompleted(fields)
  }
  if (state !== 'in-flight') {
    throw new Error(`Unexpected record state from Redis script: ${state}`)
  }
  const [fingerprint] = fields
  if (fingerprint === undefined) {
    throw new Error('Unexpected in-flight record from Redis script: missing fingerprint')
  }
  return { state: 'in-flight', fingerprint: fingerprint.toString() }
}

function parseCompleted (fields: Buffer[]): CompletedRecord {
  const [fingerprint, response] = fields
  if (fingerprint === undefined || response === undefined) {
    throw new Error('Unexpected completed record from Redis script: missing fields')
  }
  return {
    state: 'completed',
    fingerprint: fingerprint.toString(),
    response: decodeResponse(response)
  }
}

/*
 * A stored response is one binary value, which the scripts store and return
 * without parsing:
 *
 *   1 byte   format version
 *   4 bytes  length of the JSON head, unsigned big-endian
 *   n bytes  JSON head: { statusCode, headers }
 *   rest     body bytes
 *
 * The body is written as raw bytes, so a string body (encoded as UTF-8)
 * reads back as a Buffer with the same bytes.
 */
const responseFormatVersion = 1
const responsePrefixLength = 5

interface ResponseHead {
  statusCode: number
  headers: Record<string, string | string[]>
}

function encodeResponse (response: StoredResponse): Buffer {
  const head: ResponseHead = { statusCode: response.statusCode, headers: response.headers }
  const headBytes = Buffer.from(JSON.stringify(head))
  const prefix = Buffer.alloc(responsePrefixLength)
  prefix.writeUInt8(responseFormatVersion, 0)
  prefix.writeUInt32BE(headBytes.length, 1)
  const body = typeof response.body === 'string' ? Buffer.from(response.body) : response.body
  return Buffer.concat([prefix, headBytes, body])
}

function decodeResponse (value: Buffer): StoredResponse {
  if (value.length < responsePrefixLength || value.readUInt8(0) !== responseFormatVersion) {
    throw new Error(`Invalid stored response: expected format version ${responseFormatVersion}`)
  }
  const headEnd = responsePrefixLength + value.readUInt32BE(1)
  if (headEnd > value.length) {
    throw new Error('Invalid stored response: head is longer than the value')
  }
  const headText = value.subarray(responsePrefixLength, headEnd).toString()
  const head = JSON.parse(headText) as ResponseHead
  return {
    statusCode: head.statusCode,
    headers: head.headers,
    body: value.subarray(headEnd)
  }
}
