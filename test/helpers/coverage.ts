import os from 'node:os'
import path from 'node:path'

/**
 * Keeps a child process's coverage out of the report. Node copies the
 * parent's NODE_V8_COVERAGE into a child whose env lacks it, so the child
 * gets a directory of its own that c8 never reads. Such children load the
 * sources through other loaders (tsx, or dist/ with its source maps), and
 * c8 would merge their offsets with the tests' into a wrong report.
 */
export function withoutCoverage (env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  env.NODE_V8_COVERAGE = path.join(os.tmpdir(), 'fastify-idempotency-key-child-coverage')
  env._TAPJS_PROCESSINFO_COVERAGE_ = '0'
  return env
}
