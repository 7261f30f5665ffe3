import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import { withoutCoverage } from './helpers/coverage'

const root = join(__dirname, '..')

// Coverage of dist/ maps back to the sources with other offsets than the
// tests' own, and c8 would merge the two into a wrong report.
const env = withoutCoverage({ ...process.env })

// The package is consumed from dist/, so these tests build it first.
t.before(() => {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], { cwd: root, env })
})

function runNode (args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8', env })
}

const checks = `
  const names = ['idempotency', 'MemoryStorage', 'RedisStorage', 'KeyMissingError', 'StorageUnavailableError']
  const lines = [
    typeof plugin,
    plugin === mod.default,
    plugin === mod.idempotency,
    ...names.map((name) => typeof mod[name]),
    plugin[Symbol.for('plugin-meta')].name
  ]
  console.log(lines.join(' '))
`

const expected = 'function true true function function function function function fastify-idempotency-key\n'

t.test('require() returns the plugin', async (t) => {
  const output = runNode(['-e', `const mod = require('./dist/index.js'); const plugin = mod; ${checks}`])

  t.equal(output, expected)
})

t.test('import returns the plugin', async (t) => {
  const source = `import plugin, * as named from './dist/index.js'; const mod = { ...named }; ${checks}`
  const output = runNode(['--input-type=module', '-e', source])

  t.equal(output, expected)
})

t.test('registers from the build', async (t) => {
  const source = `
    const Fastify = require('fastify')
    const idempotency = require('./dist/index.js')
    const app = Fastify()
    app.register(idempotency)
    app.post('/orders', async () => ({ ok: true }))
    app.inject({ method: 'POST', url: '/orders', headers: { 'idempotency-key': 'a' } })
      .then((response) => console.log(response.statusCode))
  `
  const output = runNode(['-e', source])

  t.equal(output, '200\n')
})
