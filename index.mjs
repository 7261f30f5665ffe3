// ESM entry. Node gives `import x from` a CommonJS module's module.exports,
// which dist/index.js makes the plugin itself, with the named exports on it.
export { default } from './dist/index.js'
export * from './dist/index.js'
