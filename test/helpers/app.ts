import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Test } from 'tap'
import idempotency, { type IdempotencyOptions } from '../../index'

/** Builds a Fastify app with the plugin registered, closed at teardown. */
export async function createApp (
  t: Test,
  options: IdempotencyOptions = {},
  serverOptions: FastifyServerOptions = {}
): Promise<FastifyInstance> {
  const app = Fastify(serverOptions)
  await app.register(idempotency, options)
  t.teardown(() => app.close())
  return app
}

/** Starts listening on a free loopback port and returns the base URL. */
export async function listen (app: FastifyInstance): Promise<string> {
  return app.listen({ port: 0, host: '127.0.0.1' })
}
