import { execFile } from 'node:child_process'
import { rmSync } from 'node:fs'
import { access, mkdir, rm, symlink } from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { repoRoot } from './processes'

const execFileAsync = promisify(execFile)

/**
 * Directory of the plugin as tsc compiles it for one bench run. The servers
 * load this build, not the TypeScript source through tsx, because tsx wraps
 * every function it creates in a naming helper, which costs time per
 * request in closures that the published build does not pay. It lives
 * outside the repository, so that `npm run lint` never lints it.
 */
export const buildDir = path.join(os.tmpdir(), `fastify-idempotency-key-bench-${process.pid}`)

/** The compiled entry point, index.js, which module.exports the plugin. */
export const pluginEntry = path.join(buildDir, 'index.js')

/**
 * Compiles index.ts and lib/ with the repository's tsconfig.build.json
 * into buildDir, next to a link to the repository's node_modules. Type
 * errors are printed but do not stop the bench, as tsc still emits the
 * JavaScript.
 */
export async function buildPlugin (): Promise<void> {
  await removeBuild()
  await mkdir(buildDir, { recursive: true })
  // A bench stopped by Ctrl-C or a kill skips its own cleanup, but still
  // exits through the 'exit' event (see processes.ts).
  process.once('exit', () => rmSync(buildDir, { recursive: true, force: true }))
  await symlink(path.join(repoRoot, 'node_modules'), path.join(buildDir, 'node_modules'), 'dir')
  const tsc = require.resolve('typescript/bin/tsc')
  const args = [tsc, '-p', 'tsconfig.build.json', '--outDir', buildDir, '--declaration', 'false', '--sourceMap', 'false']
  try {
    await execFileAsync(process.execPath, args, { cwd: repoRoot })
  } catch (error) {
    const output = (error as { stdout?: string }).stdout ?? ''
    try {
      await access(pluginEntry)
    } catch {
      throw new Error(`tsc did not build ${pluginEntry}:\n${output}`)
    }
    console.error(`tsc reported errors, but built the plugin; benchmarking that build:\n${output}`)
  }
}

/** Deletes buildDir and its link, never the node_modules it points to. */
export async function removeBuild (): Promise<void> {
  await rm(buildDir, { recursive: true, force: true })
}
