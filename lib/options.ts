import type { FastifyRequest } from 'fastify'
import { InvalidOptionError } from './errors'
import type { IdempotencyStorage } from './storage'

export type IdempotencyMode = 'required' | 'exempt' | 'manual' | 'optional'

/** Computes the storage key of a request from its idempotency key. */
export type IdempotencyEncoder = (request: FastifyRequest, key: string) => string

export interface IdempotencyOptions {
  /** Routes without `config.idempotency`: key required, or not checked. */
  mode?: 'required' | 'exempt'
  /** Request header that carries the key. */
  header?: string
  /** `'memory'`, `'redis'` (the client of `@fastify/redis`) or a storage. */
  storage?: 'memory' | 'redis' | IdempotencyStorage
  /** With `storage: 'redis'`: the `@fastify/redis` namespace to use. */
  redisNamespace?: string
  /** With `storage: 'redis'`: prefix of every Redis key the plugin writes. */
  keyPrefix?: string
  encoder?: IdempotencyEncoder
  /** Status of a replayed response; `null` replays the original status. */
  conflictStatusCode?: number | null
  /** Claim each key before its handler runs. */
  lock?: boolean
  /** Time in ms that a duplicate waits for an in-flight original. */
  lockTimeout?: number
  /** Lease in ms, at least 10, of an in-flight claim, renewed while its handler runs. */
  lockTtl?: number
  /** Status for a duplicate whose original is still in flight. */
  lockedStatusCode?: number
  /** Statuses whose responses are stored; others release the key. */
  storeOnStatuses?: number[]
  /** Time in ms that a stored response is kept. */
  ttl?: number
  /** Reject a key reused with a different body or query string. */
  fingerprint?: boolean
}

/** Per-route overrides, the object form of `config.idempotency`. */
export interface IdempotencyRouteOptions {
  mode?: IdempotencyMode
  ttl?: number
  storeOnStatuses?: number[]
  conflictStatusCode?: number | null
  redisNamespace?: string
}

export type IdempotencyRouteConfig = IdempotencyMode | IdempotencyRouteOptions

/** Plugin options after validation, with every default filled in. */
export interface ResolvedOptions {
  mode: 'required' | 'exempt'
  header: string
  storage: 'memory' | 'redis' | IdempotencyStorage
  redisNamespace: string | undefined
  keyPrefix: string
  encoder: IdempotencyEncoder | null
  conflictStatusCode: number | null
  lock: boolean
  lockTimeout: number
  lockTtl: number
  lockedStatusCode: number
  storeOnStatuses: number[]
  ttl: number
  fingerprint: boolean
}

const modes = ['required', 'exempt', 'manual', 'optional']

// Node's timers take at most 2^31 - 1 ms, and lockTimeout and the lease
// renewal run on timers.
const maxTimerDelay = 2 ** 31 - 1

// A replay needs a status that carries a body.
const bodylessStatuses = [204, 205, 304]
const routeOptionNames = ['mode', 'ttl', 'storeOnStatuses', 'conflictStatusCode', 'redisNamespace']

const defaults: ResolvedOptions = {
  mode: 'required',
  header: 'idempotency-key',
  storage: 'memory',
  redisNamespace: undefined,
  keyPrefix: 'idempotency:',
  encoder: null,
  conflictStatusCode: 409,
  lock: true,
  lockTimeout: 100,
  lockTtl: 30_000,
  lockedStatusCode: 423,
  storeOnStatuses: [200, 201, 202, 203, 204, 205, 206, 207],
  ttl: 24 * 60 * 60 * 1000,
  fingerprint: true
}

// A claim is renewed every lockTtl / 3 ms, so a lease of a few ms would
// end before a Node timer could renew it.
const minLockTtl = 10

// An HTTP header name is an RFC 9110 token.
const headerNamePattern = /^[!#$%&'*+.^_`|~0-9a-z-]+$/i

/** Validates plugin options and fills in the defaults. */
export function resolveOptions (options: IdempotencyOptions): ResolvedOptions {
  if (typeof options !== 'object' || options === null) {
    throw new InvalidOptionError('options', `expected an object, received ${describe(options)}`)
  }
  const { prefix, logLevel, logSerializers, ...pluginOptions } = options as Record<string, unknown>
  rejectUnknownNames('', pluginOptions, Object.keys(defaults))
  const resolved = { ...defaults, ...withoutUndefined(pluginOptions as IdempotencyOptions) }

  checkOneOf('mode', resolved.mode, ['required', 'exempt'])
  if (typeof resolved.header !== 'string' || !headerNamePattern.test(resolved.header)) {
    throw invalid('header', resolved.header, 'a header name')
  }
  resolved.header = resolved.header.toLowerCase()
  checkStorage(resolved.storage)
  checkOptionalString('redisNamespace', resolved.redisNamespace)
  if (typeof resolved.keyPrefix !== 'string') {
    throw invalid('keyPrefix', resolved.keyPrefix, 'a string')
  }
  if (resolved.encoder !== null && typeof resolved.encoder !== 'function') {
    throw invalid('encoder', resolved.encoder, 'a function (request, key) => string')
  }
  checkConflictStatus('conflictStatusCode', resolved.conflictStatusCode)
  checkBoolean('lock', resolved.lock)
  checkDuration('lockTimeout', resolved.lockTimeout, 0, maxTimerDelay)
  checkDuration('lockTtl', resolved.lockTtl, minLockTtl, maxTimerDelay)
  checkStatus('lockedStatusCode', resolved.lockedStatusCode, 400)
  checkStatusList('storeOnStatuses', resolved.storeOnStatuses)
  checkDuration('ttl', resolved.ttl, 1)
  checkBoolean('fingerprint', resolved.fingerprint)

  if (resolved.redisNamespace !== undefined && resolved.storage !== 'redis') {
    throw new InvalidOptionError('redisNamespace', "applies only with storage: 'redis'")
  }
  return resolved
}

/** Validates `config.idempotency` of one route and returns its overrides. */
export function resolveRouteConfig (
  config: unknown,
  routeName: string
): IdempotencyRouteOptions | null {
  if (config === undefined) {
    return null
  }
  if (typeof config === 'string') {
    checkOneOf(`${routeName} mode`, config, modes)
    return { mode: config as IdempotencyMode }
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) {
    throw invalid(routeName, config, 'a mode or an object of route options')
  }

  const route = withoutUndefined(config as IdempotencyRouteOptions)
  rejectUnknownNames(`${routeName} `, route, routeOptionNames)
  if (route.mode !== undefined) checkOneOf(`${routeName} mode`, route.mode, modes)
  if (route.ttl !== undefined) checkDuration(`${routeName} ttl`, route.ttl, 1)
  if (route.storeOnStatuses !== undefined) {
    checkStatusList(`${routeName} storeOnStatuses`, route.storeOnStatuses)
  }
  if (route.conflictStatusCode !== undefined) {
    checkConflictStatus(`${routeName} conflictStatusCode`, route.conflictStatusCode)
  }
  checkOptionalString(`${routeName} redisNamespace`, route.redisNamespace)
  return route
}

function rejectUnknownNames (scope: string, options: object, known: string[]): void {
  for (const name of Object.keys(options)) {
    if (!known.includes(name)) {
      throw new InvalidOptionError(`${scope}${name}`, `unknown option; expected one of ${known.join(', ')}`)
    }
  }
}

function withoutUndefined<T extends object> (options: T): Partial<T> {
  const entries = Object.entries(options).filter(([, value]) => value !== undefined)
  return Object.fromEntries(entries) as Partial<T>
}

function checkStorage (storage: unknown): void {
  if (storage === 'memory' || storage === 'redis') {
    return
  }
  const methods = ['claim', 'get', 'complete', 'renew', 'release']
  const isStorage = typeof storage === 'object' && storage !== null &&
    methods.every((method) => typeof (storage as Record<string, unknown>)[method] === 'function')
  if (!isStorage) {
    throw invalid('storage', storage, `'memory', 'redis' or an object with ${methods.join(', ')}`)
  }
}

function checkOneOf (name: string, value: unknown, allowed: string[]): void {
  if (typeof value !== 'string' || !allowed.includes(value)) {
    throw invalid(name, value, `one of ${allowed.map((mode) => `'${mode}'`).join(', ')}`)
  }
}

function checkBoolean (name: string, value: unknown): void {
  if (typeof value !== 'boolean') {
    throw invalid(name, value, 'a boolean')
  }
}

function checkOptionalString (name: string, value: unknown): void {
  if (value !== undefined && (typeof value !== 'string' || value === '')) {
    throw invalid(name, value, 'a non-empty string')
  }
}

function checkDuration (name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): void {
  if (!Number.isSafeInteger(value) || (value as number) < min || (value as number) > max) {
    throw invalid(name, value, `a whole number of milliseconds from ${min} to ${max}`)
  }
}

function checkStatus (name: string, value: unknown, min = 100): void {
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > 599) {
    throw invalid(name, value, `an HTTP status code from ${min} to 599`)
  }
}

function checkConflictStatus (name: string, value: unknown): void {
  if (value === null) {
    return
  }
  checkStatus(name, value, 200)
  if (bodylessStatuses.includes(value as number)) {
    throw invalid(name, value, `a status with a body, not ${bodylessStatuses.join(', ')}`)
  }
}

function checkStatusList (name: string, value: unknown): void {
  if (!Array.isArray(value) || value.length === 0) {
    throw invalid(name, value, 'a non-empty array of HTTP status codes')
  }
  for (const status of value) {
    checkStatus(name, status)
  }
}

function invalid (name: string, value: unknown, expected: string): Error {
  return new InvalidOptionError(name, `expected ${expected}, received ${describe(value)}`)
}

function describe (value: unknown): string {
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'string') return JSON.stringify(value)
  if (Array.isArray(value)) return `[${value.map(describe).join(', ')}]`
  if (typeof value === 'object' && value !== null) return 'an object'
  return String(value)
}
