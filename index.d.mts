// Types for the ESM entry. TypeScript reads `export default` in a CommonJS
// declaration as a property of module.exports, so the default export is
// declared here as the plugin itself.
import type plugin from './dist/index.js'

declare const idempotency: typeof plugin.default
export default idempotency
export * from './dist/index.js'
