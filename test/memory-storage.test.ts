import t from 'tap'
import { MemoryStorage } from '../index'

const response = { statusCode: 200, headers: {}, body: 'ok' }

async function store (storage: MemoryStorage, key: string) {
  await storage.claim(key, { token: key, fingerprint: 'f', lease: 10_000, takeover: false })
  await storage.complete(key, key, { state: 'completed', fingerprint: 'f', response }, 60_000)
}

t.test('evicts least recently used', async (t) => {
  const storage = new MemoryStorage({ maxEntries: 3 })

  await store(storage, 'a')
  await store(storage, 'b')
  await store(storage, 'c')
  await storage.get('a')
  await store(storage, 'd')

  t.equal(storage.size, 3)
  t.not(await storage.get('a'), null)
  t.equal(await storage.get('b'), null)
  t.not(await storage.get('c'), null)
  t.not(await storage.get('d'), null)
})

t.test('never evicts a running claim', async (t) => {
  const storage = new MemoryStorage({ maxEntries: 2 })

  await storage.claim('running', { token: 't', fingerprint: 'f', lease: 10_000, takeover: false })
  await store(storage, 'b')
  await store(storage, 'c')

  t.same(await storage.get('running'), { state: 'in-flight', fingerprint: 'f' })
  t.equal(await storage.get('b'), null)
  t.equal(storage.size, 2)
})

t.test('stays bounded under unique keys', async (t) => {
  const storage = new MemoryStorage({ maxEntries: 100 })

  for (let i = 0; i < 10_000; i++) {
    await store(storage, `key-${i}`)
  }

  t.equal(storage.size, 100)
})

t.test('expired entries are dropped on read', async (t) => {
  const storage = new MemoryStorage()
  await storage.claim('k', { token: 't', fingerprint: 'f', lease: 10_000, takeover: false })
  await storage.complete('k', 't', { state: 'completed', fingerprint: 'f', response }, 20)

  await new Promise((resolve) => setTimeout(resolve, 40))

  t.equal(await storage.get('k'), null)
  t.equal(storage.size, 0)
})

t.test('rejects a bad maxEntries', async (t) => {
  t.throws(() => new MemoryStorage({ maxEntries: 0 }), /maxEntries: 0/)
})

t.test('shrinks back after a burst', async (t) => {
  const storage = new MemoryStorage({ maxEntries: 10 })
  const tokens: string[] = []
  for (let i = 0; i < 50; i++) {
    const token = `running-${i}`
    tokens.push(token)
    await storage.claim(token, { token, fingerprint: 'f', lease: 10_000, takeover: false })
  }
  t.equal(storage.size, 50)

  for (const token of tokens) {
    await storage.complete(token, token, { state: 'completed', fingerprint: 'f', response }, 60_000)
  }
  await store(storage, 'after-burst')

  t.equal(storage.size, 10)
  t.not(await storage.get('after-burst'), null)
})
