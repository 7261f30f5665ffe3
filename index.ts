import { randomUUID } from 'node:crypto'
import type { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  RouteOptions
} from 'fastify'
import fp from 'fastify-plugin'
import {
  AlreadyRegisteredError,
  EncoderResultError,
  InProgressError,
  InvalidOptionError,
  KeyMissingError,
  PayloadMismatchError,
  StorageUnavailableError
} from './lib/errors'
import { MemoryStorage } from './lib/memory-storage'
import {
  resolveOptions,
  resolveRouteConfig,
  type IdempotencyEncoder,
  type IdempotencyOptions,
  type IdempotencyRouteConfig,
  type ResolvedOptions
} from './lib/options'
import { RedisStorage } from './lib/redis-storage'
import { captureResponse, sendReplay } from './lib/replay'
import {
  createDefaultEncoder,
  fingerprintWithoutBody,
  hashBody,
  readKey,
  type HashedBody
} from './lib/request-key'
import type {
  ClaimOptions,
  ClaimResult,
  CompletedRecord,
  IdempotencyStorage,
  StoredResponse
} from './lib/storage'

/** The idempotency key of a request and its stored response, as a handler reads them. */
export interface RequestIdempotency {
  /** The key the client sent, or null when none was sent or checked. */
  key: string | null
  /** Whether a response was already stored for this key. */
  exists: boolean
  /** The stored response, when `exists` is true. */
  response: StoredResponse | null
}

declare module 'fastify' {
  interface FastifyContextConfig {
    idempotency?: IdempotencyRouteConfig
  }
  interface FastifyRequest {
    idempotency: RequestIdempotency
  }
}

/** Options of one route, after its route config is merged in. */
interface RouteSettings {
  mode: 'required' | 'optional' | 'manual'
  header: string
  storage: IdempotencyStorage
  encoder: IdempotencyEncoder
  conflictStatusCode: number | null
  lock: boolean
  lockTimeout: number
  lockTtl: number
  lockedStatusCode: number
  storeOnStatuses: Set<number>
  ttl: number
  fingerprint: boolean
}

interface RequestState {
  info: RequestIdempotency
  storageKey: string
  body: HashedBody | null
  fingerprint: string
  /** Set while this request still has to store or release its response. */
  token: string | null
  /** Whether `token` owns a claim in storage, which it does unless `lock` is off. */
  claimed: boolean
  /** Renews the claim on the shared timer, while the handler runs. */
  renewal: (() => void) | null
}

const kState = Symbol('fastify-idempotency-key.state')

const noIdempotency: RequestIdempotency = Object.freeze({
  key: null,
  exists: false,
  response: null
})

// QUERY is the safe method with a body of the HTTP QUERY method draft.
const safeMethods = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'QUERY'])

// The first wait of a duplicate for its in-flight original, doubled after
// each poll of the storage until lockTimeout runs out.
const firstPollDelay = 5

async function fastifyIdempotency (fastify: FastifyInstance, options: IdempotencyOptions) {
  const resolved = resolveOptions(options)
  const storages = createStorageResolver(fastify, resolved)
  const defaultStorage = storages(resolved.redisNamespace)
  const renewals = createRenewalTimer(Math.floor(resolved.lockTtl / 3))

  if (fastify.hasRequestDecorator(kState)) {
    throw new AlreadyRegisteredError()
  }
  fastify.decorateRequest(kState, null)
  fastify.decorateRequest('idempotency', {
    getter (this: FastifyRequest) {
      return (this as RequestWithState)[kState]?.info ?? noIdempotency
    }
  })

  fastify.addHook('onRoute', function addIdempotencyHooks (route) {
    const settings = settingsForRoute(route, resolved, defaultStorage, storages)
    if (settings === null) {
      return
    }
    const hooks = createRouteHooks(settings, renewals, isMixedMethod(route))
    route.onRequest = appendHook(route.onRequest, hooks.onRequest)
    if (settings.fingerprint) {
      route.preParsing = appendHook(route.preParsing, hooks.preParsing)
    }
    route.preHandler = appendHook(route.preHandler, hooks.preHandler)
    // Stored before the route's other onSend hooks run, such as compression,
    // because a replay passes through them again for its own client.
    route.onSend = prependHook(route.onSend, hooks.onSend)
  })
}

type RequestWithState = FastifyRequest & { [kState]: RequestState | null }

function createStorageResolver (fastify: FastifyInstance, options: ResolvedOptions) {
  const redisStorages = new Map<string, IdempotencyStorage>()

  return function storageFor (namespace: string | undefined): IdempotencyStorage {
    if (options.storage === 'memory') {
      return new MemoryStorage()
    }
    if (options.storage !== 'redis') {
      return options.storage
    }

    const name = namespace ?? ''
    let storage = redisStorages.get(name)
    if (storage === undefined) {
      storage = new RedisStorage(redisClient(fastify, namespace), { keyPrefix: options.keyPrefix })
      redisStorages.set(name, storage)
    }
    return storage
  }
}

function redisClient (fastify: FastifyInstance, namespace: string | undefined) {
  if (!fastify.hasDecorator('redis')) {
    throw new InvalidOptionError('storage', "'redis' needs @fastify/redis: register it before this plugin")
  }
  const redis = (fastify as unknown as { redis: Record<string, unknown> }).redis
  const client = namespace === undefined ? redis : redis[namespace]
  if (typeof (client as { defineCommand?: unknown } | undefined)?.defineCommand === 'function') {
    return client as ConstructorParameters<typeof RedisStorage>[0]
  }
  if (namespace === undefined) {
    // @fastify/redis decorates only namespaces when every client has one.
    throw new InvalidOptionError('redisNamespace', 'no default @fastify/redis client is registered: set redisNamespace')
  }
  throw new InvalidOptionError('redisNamespace', `no @fastify/redis client is registered as ${JSON.stringify(namespace)}`)
}

function settingsForRoute (
  route: RouteOptions,
  options: ResolvedOptions,
  defaultStorage: IdempotencyStorage,
  storageFor: (namespace: string | undefined) => IdempotencyStorage
): RouteSettings | null {
  const methods = Array.isArray(route.method) ? route.method : [route.method]
  const routeName = `${methods.join(',')} ${route.url} config.idempotency`
  const config = resolveRouteConfig(route.config?.idempotency, routeName)
  const mode = config?.mode ?? options.mode
  if (mode === 'exempt' || methods.every((method) => safeMethods.has(method))) {
    return null
  }

  let storage = defaultStorage
  if (config?.redisNamespace !== undefined) {
    if (options.storage !== 'redis') {
      throw new InvalidOptionError(`${routeName} redisNamespace`, "needs storage: 'redis'")
    }
    storage = storageFor(config.redisNamespace)
  }

  return {
    mode,
    header: options.header,
    storage,
    encoder: options.encoder ?? createDefaultEncoder(routeIdentity(route)),
    conflictStatusCode: config?.conflictStatusCode !== undefined
      ? config.conflictStatusCode
      : options.conflictStatusCode,
    lock: options.lock,
    lockTimeout: options.lockTimeout,
    lockTtl: options.lockTtl,
    lockedStatusCode: options.lockedStatusCode,
    storeOnStatuses: new Set(config?.storeOnStatuses ?? options.storeOnStatuses),
    ttl: config?.ttl ?? options.ttl,
    fingerprint: options.fingerprint
  }
}

/** Returns the URL pattern and constraints that tell one route from another. */
function routeIdentity (route: RouteOptions): string {
  const constraints = route.constraints === undefined ? '' : JSON.stringify(route.constraints)
  return `${route.url}\0${constraints}`
}

function isMixedMethod (route: RouteOptions): boolean {
  return Array.isArray(route.method) && route.method.some((method) => safeMethods.has(method))
}

function appendHook<T> (existing: T | T[] | undefined, hook: T): T[] {
  if (existing === undefined) {
    return [hook]
  }
  return Array.isArray(existing) ? [...existing, hook] : [existing, hook]
}

function prependHook<T> (existing: T | T[] | undefined, hook: T): T[] {
  if (existing === undefined) {
    return [hook]
  }
  return Array.isArray(existing) ? [hook, ...existing] : [hook, existing]
}

/** Calls every renewal added to it, every `interval` ms, while it contains any. */
interface RenewalTimer {
  add (renewal: () => void): void
  delete (renewal: () => void): void
}

/**
 * Returns one timer for all the claims of a plugin instance, so that a first
 * request neither creates nor clears a timer of its own. A claim added
 * between two ticks is renewed within one interval, a third of its lease.
 * The timer stops at the first tick that finds no claim, rather than when
 * the last claim ends, because under load the set of claims empties and
 * refills between most ticks.
 */
function createRenewalTimer (interval: number): RenewalTimer {
  const renewals = new Set<() => void>()
  let timer: NodeJS.Timeout | null = null

  function renewAll () {
    if (renewals.size === 0) {
      clearInterval(timer as NodeJS.Timeout)
      timer = null
      return
    }
    for (const renewal of renewals) {
      renewal()
    }
  }

  return {
    add (renewal) {
      renewals.add(renewal)
      if (timer === null) {
        timer = setInterval(renewAll, interval)
        timer.unref()
      }
    },
    delete (renewal) {
      renewals.delete(renewal)
    }
  }
}

function createRouteHooks (settings: RouteSettings, renewals: RenewalTimer, mixedMethods: boolean) {
  const { storage, header } = settings

  function stateOf (request: FastifyRequest): RequestState | null {
    return (request as RequestWithState)[kState]
  }

  // onRequest and preParsing never wait, so they take callbacks and
  // allocate no promise per request.
  function idempotencyCheckKey (request: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void) {
    let error: Error | null
    try {
      error = startRequest(request)
    } catch (err) {
      error = err as Error
    }
    done(error ?? undefined)
  }

  /** Reads the key and sets up the request's state, or returns why not. */
  function startRequest (request: FastifyRequest): Error | null {
    if (mixedMethods && safeMethods.has(request.method)) {
      return null
    }
    const key = readKey(request, header)
    if (key instanceof Error) {
      return key
    }
    if (key === null) {
      return settings.mode === 'optional' ? null : new KeyMissingError(header)
    }

    const storageKey = settings.encoder(request, key)
    if (typeof storageKey !== 'string' || storageKey === '') {
      return new EncoderResultError(typeof storageKey === 'string' ? 'an empty string' : typeof storageKey)
    }
    (request as RequestWithState)[kState] = {
      info: { key, exists: false, response: null },
      storageKey,
      body: null,
      fingerprint: '',
      token: null,
      claimed: false,
      renewal: null
    }
    return null
  }

  function idempotencyHashBody (
    request: FastifyRequest,
    _reply: FastifyReply,
    body: Readable,
    done: (err: Error | null, body: Readable) => void
  ) {
    const state = stateOf(request)
    if (state !== null && hasBody(request)) {
      state.body = hashBody(request, body)
    }
    done(null, body)
  }

  async function idempotencyClaim (request: FastifyRequest, reply: FastifyReply) {
    const state = stateOf(request)
    if (state === null) {
      return
    }
    state.fingerprint = fingerprintOf(request, state, settings.fingerprint)

    if (!settings.lock) {
      return checkWithoutLock(request, reply, state)
    }

    const token = randomUUID()
    const claimOptions: ClaimOptions = {
      token,
      fingerprint: state.fingerprint,
      lease: settings.lockTtl,
      takeover: settings.mode === 'manual'
    }
    let deadline = 0
    let delay = firstPollDelay
    for (;;) {
      let result: ClaimResult
      try {
        result = checkClaimResult(await storage.claim(state.storageKey, claimOptions))
      } catch (err) {
        // A claim that timed out on the client may still land on the server
        // later, and nothing else would free it before its lease ends.
        storage.release(state.storageKey, token).catch(() => {})
        throw new StorageUnavailableError({ cause: err })
      }

      if (result.claimed) {
        request.log.debug({ idempotencyKey: state.info.key }, 'idempotency key claimed')
        state.token = token
        state.claimed = true
        state.info.exists = result.previous !== null
        state.info.response = result.previous?.response ?? null
        startRenewal(request, reply, state)
        releaseWhenHijacked(request, reply, state)
        return
      }

      const record = result.record
      checkFingerprint(state, record.fingerprint)
      if (record.state === 'completed') {
        return replay(request, reply, state, record.response)
      }

      // The clock starts at the first wait, so a first request never reads it.
      if (deadline === 0) {
        deadline = Date.now() + settings.lockTimeout
      }
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        return rejectInProgress(request, reply, state)
      }
      await sleep(Math.min(delay, remaining))
      delay *= 2
    }
  }

  async function checkWithoutLock (request: FastifyRequest, reply: FastifyReply, state: RequestState) {
    const record = await callStorage(() => storage.get(state.storageKey))
    if (record?.state === 'completed') {
      if (settings.mode === 'manual') {
        state.info.exists = true
        state.info.response = record.response
      } else {
        checkFingerprint(state, record.fingerprint)
        return replay(request, reply, state, record.response)
      }
    }
    state.token = randomUUID()
  }

  function checkFingerprint (state: RequestState, storedFingerprint: string) {
    if (settings.fingerprint && settings.mode !== 'manual' && storedFingerprint !== state.fingerprint) {
      throw new PayloadMismatchError()
    }
  }

  function replay (request: FastifyRequest, reply: FastifyReply, state: RequestState, response: StoredResponse) {
    request.log.debug({ idempotencyKey: state.info.key }, 'idempotency key replayed')
    // A body that the handler would have read as a stream is still
    // unread, and the connection can only be reused once it is drained.
    state.body?.discard()
    return sendReplay(reply, response, settings.conflictStatusCode)
  }

  function rejectInProgress (request: FastifyRequest, reply: FastifyReply, state: RequestState) {
    request.log.debug({ idempotencyKey: state.info.key }, 'idempotency key still in progress')
    const retryAfter = Math.max(1, Math.ceil(settings.lockTimeout / 1000))
    reply.header('retry-after', String(retryAfter))
    const error: { statusCode: number } = new InProgressError(retryAfter)
    error.statusCode = settings.lockedStatusCode
    throw error
  }

  function startRenewal (request: FastifyRequest, reply: FastifyReply, state: RequestState) {
    state.renewal = () => {
      renewClaim(request, reply, state).catch(() => {})
    }
    renewals.add(state.renewal)
  }

  /**
   * Watches for a hijacked reply, which never reaches onSend, so its response
   * cannot be stored. Its key is released once the handler ends the response.
   */
  function releaseWhenHijacked (request: FastifyRequest, reply: FastifyReply, state: RequestState) {
    reply.raw.once('close', () => {
      checkHijacked(request, reply, state)
    })
  }

  /**
   * Returns whether a hijacked reply needs no more renewals. A reply counts
   * as hijacked when it was sent without passing through onSend, which would
   * have cleared `state.token`.
   */
  function checkHijacked (request: FastifyRequest, reply: FastifyReply, state: RequestState): boolean {
    if (state.token === null || !reply.sent) {
      return false
    }
    const logContext = { idempotencyKey: state.info.key }
    // end() means the handler wrote all it will, even if the client left.
    if (reply.raw.writableEnded) {
      request.log.warn(logContext, 'idempotency key released: a hijacked reply cannot be stored')
      finish(request, state, null).catch(() => {})
      return true
    }
    if (reply.raw.destroyed) {
      // The hijacked handler may still be running, and no event marks its
      // end, so the claim is left to expire after lockTtl.
      request.log.warn(logContext, 'idempotency claim left to expire: a hijacked reply lost its connection')
      stopRenewal(state, renewals)
      return true
    }
    return false
  }

  async function renewClaim (request: FastifyRequest, reply: FastifyReply, state: RequestState) {
    const token = state.token
    if (token === null || checkHijacked(request, reply, state)) {
      return
    }
    try {
      if (!await storage.renew(state.storageKey, token, settings.lockTtl)) {
        stopRenewal(state, renewals)
        request.log.warn({ idempotencyKey: state.info.key }, 'idempotency claim was lost before the handler finished')
      }
    } catch (err) {
      request.log.warn({ err, idempotencyKey: state.info.key }, 'idempotency claim renewal failed')
    }
  }

  // A callback hook, like onRequest, so that requests with nothing to store,
  // such as replays, pass through without allocating a promise.
  function idempotencyStore (
    request: FastifyRequest,
    reply: FastifyReply,
    payload: unknown,
    done: (err: Error | null, payload?: unknown) => void
  ) {
    const state = stateOf(request)
    if (state === null || state.token === null) {
      done(null, payload)
      return
    }
    finish(request, state, responseToStore(request, reply, state, payload))
      .then(() => done(null, payload), done)
  }

  /** Returns the response to store, or null when the key must be released. */
  function responseToStore (
    request: FastifyRequest,
    reply: FastifyReply,
    state: RequestState,
    payload: unknown
  ): StoredResponse | null {
    if (!settings.storeOnStatuses.has(reply.statusCode)) {
      request.log.debug({ idempotencyKey: state.info.key, statusCode: reply.statusCode }, 'idempotency key released')
      return null
    }
    const body = storableBody(payload)
    if (body === null) {
      request.log.warn({ idempotencyKey: state.info.key }, 'idempotency key released: a streamed response cannot be stored')
      return null
    }
    return captureResponse(reply, body)
  }

  /** Stores the response, or releases the key when it is null. */
  async function finish (request: FastifyRequest, state: RequestState, response: StoredResponse | null) {
    const token = state.token as string
    state.token = null
    stopRenewal(state, renewals)

    try {
      if (response === null) {
        if (state.claimed) {
          await storage.release(state.storageKey, token)
        }
        return
      }
      const stored = await storeResponse(state, token, response)
      if (stored) {
        request.log.debug({ idempotencyKey: state.info.key }, 'idempotency response stored')
      } else {
        request.log.warn({ idempotencyKey: state.info.key }, 'idempotency response not stored: the claim was lost')
      }
    } catch (err) {
      // The handler has run, so the client still gets its response.
      request.log.error({ err, idempotencyKey: state.info.key }, 'idempotency storage failed or timed out after the handler ran, so the response may not be stored')
    }
  }

  /** Completes the claim with the response, claiming it first without `lock`. */
  function storeResponse (state: RequestState, token: string, response: StoredResponse): Promise<boolean> {
    const record: CompletedRecord = { state: 'completed', fingerprint: state.fingerprint, response }
    if (state.claimed) {
      return storage.complete(state.storageKey, token, record, settings.ttl)
    }
    return claimAndComplete(state, token, record)
  }

  async function claimAndComplete (state: RequestState, token: string, record: CompletedRecord) {
    const claim = await storage.claim(state.storageKey, {
      token,
      fingerprint: state.fingerprint,
      lease: settings.lockTtl,
      takeover: true
    })
    return claim.claimed && storage.complete(state.storageKey, token, record, settings.ttl)
  }

  return {
    onRequest: idempotencyCheckKey,
    preParsing: idempotencyHashBody,
    preHandler: idempotencyClaim,
    onSend: idempotencyStore
  }
}

function checkClaimResult (result: ClaimResult): ClaimResult {
  if (typeof result?.claimed !== 'boolean' || (!result.claimed && typeof result.record !== 'object')) {
    throw new TypeError(`storage.claim() returned an invalid result: ${JSON.stringify(result)}`)
  }
  return result
}

function fingerprintOf (request: FastifyRequest, state: RequestState, enabled: boolean): string {
  if (!enabled) {
    return ''
  }
  if (state.body === null) {
    return fingerprintWithoutBody(request)
  }
  return state.body.digest()
}

function hasBody (request: FastifyRequest): boolean {
  const contentLength = request.headers['content-length']
  return request.headers['transfer-encoding'] !== undefined ||
    (contentLength !== undefined && contentLength !== '0')
}

function storableBody (payload: unknown): string | Buffer | null {
  if (payload === undefined || payload === null) {
    return ''
  }
  if (typeof payload === 'string' || Buffer.isBuffer(payload)) {
    return payload
  }
  return null
}

function stopRenewal (state: RequestState, renewals: RenewalTimer) {
  if (state.renewal !== null) {
    renewals.delete(state.renewal)
    state.renewal = null
  }
}

/**
 * Runs a storage call that must succeed before the handler may run. Its
 * failure becomes a 503, which Fastify logs with the storage error as cause.
 */
async function callStorage<T> (operation: () => Promise<T>): Promise<T> {
  try {
    return await operation()
  } catch (err) {
    throw new StorageUnavailableError({ cause: err })
  }
}

const idempotency: FastifyPluginAsync<IdempotencyOptions> = fp(fastifyIdempotency, {
  fastify: '5.x',
  name: 'fastify-idempotency-key'
})

export default idempotency
export { idempotency, MemoryStorage, RedisStorage }
export {
  AlreadyRegisteredError,
  EncoderResultError,
  InProgressError,
  InvalidOptionError,
  KeyInvalidError,
  KeyMissingError,
  PayloadMismatchError,
  StorageUnavailableError
} from './lib/errors'
export { storageContract, type StorageContractCase } from './lib/storage-contract'
export type { MemoryStorageOptions } from './lib/memory-storage'
export type { RedisStorageOptions } from './lib/redis-storage'
export type {
  IdempotencyEncoder,
  IdempotencyMode,
  IdempotencyOptions,
  IdempotencyRouteConfig,
  IdempotencyRouteOptions
} from './lib/options'
export type {
  ClaimOptions,
  ClaimResult,
  CompletedRecord,
  IdempotencyRecord,
  IdempotencyStorage,
  InFlightRecord,
  StoredResponse
} from './lib/storage'

// `require()` and Node's ESM `import x from` both return module.exports of a
// CommonJS package, so it is the plugin itself, with every export attached.
module.exports = Object.assign(idempotency, module.exports)
