import { randomUUID } from 'node:crypto'
import { Cluster, type Redis } from 'ioredis'
import t from 'tap'
import { describeStatuses, post } from './helpers/payments'
import { startServerProcess, type ServerProcess } from './fixtures/server'
import { startRedisCluster } from './helpers/redis'

// Creating the Cluster and starting two server processes takes several
// seconds on a busy machine.
t.setTimeout(180_000)

/** Counts the idempotency records on one Cluster node. */
async function countRecords (node: Redis): Promise<number> {
  const keys = await node.keys('idempotency:*')
  return keys.length
}

t.test('Cluster with two server processes', async (t) => {
  const nodes = await startRedisCluster(t)
  if (nodes === null) {
    return
  }
  const cluster = new Cluster(nodes)
  t.teardown(() => cluster.disconnect())
  const runsKey = `runs:${randomUUID()}`
  const options = { clusterNodes: nodes, runsKey, handlerDelay: 200, lockTimeout: 10_000 }
  const servers: ServerProcess[] = await Promise.all([
    startServerProcess(t, options),
    startServerProcess(t, options)
  ])

  t.test('100 duplicates run once', async (t) => {
    const responses = await Promise.all(Array.from({ length: 100 }, (_, i) => {
      return post(servers[i % servers.length]!.url, 'cluster-once')
    }))
    t.comment(`100 requests over 2 processes: ${describeStatuses(responses)}`)

    t.equal(await cluster.hget(runsKey, 'cluster-once'), '1')
    const originals = responses.filter((response) => response.status === 200)
    t.equal(originals.length, 1)
    const others = responses.filter((response) => response.status !== 200)
    t.equal(others.length, 99)
    for (const response of others) {
      t.ok(response.status === 409 || response.status === 423, `status ${response.status} is 409 or 423`)
      if (response.status === 409) {
        t.equal(response.replayed, 'true')
        t.equal(response.body, originals[0]?.body)
      }
    }
  })

  t.test('30 keys over 3 nodes run once', async (t) => {
    const primaries = cluster.nodes('master')
    t.equal(primaries.length, 3)
    const before = await Promise.all(primaries.map(countRecords))

    const keys = Array.from({ length: 30 }, (_, i) => `cluster-many-${i}`)
    // Three duplicates in a row alternate between the two processes.
    const requests = keys.flatMap((key) => [key, key, key])
    const responses = await Promise.all(requests.map((key, i) => post(servers[i % servers.length]!.url, key)))
    t.comment(`90 requests for 30 keys over 2 processes: ${describeStatuses(responses)}`)

    for (const key of keys) {
      t.equal(await cluster.hget(runsKey, key), '1', `runs of ${key}`)
      const ofKey = responses.filter((_, i) => requests[i] === key)
      t.equal(ofKey.filter((response) => response.status === 200).length, 1, `200 responses of ${key}`)
      const unexpected = ofKey.filter((response) => ![200, 409, 423].includes(response.status))
      t.same(unexpected, [], `${key} gets only 200, 409 or 423`)
    }

    // Every primary has some of the 30 new records, so claims and stores
    // ran on every node of the Cluster.
    const after = await Promise.all(primaries.map(countRecords))
    const added = after.map((count, i) => count - (before[i] as number))
    t.comment(`new records per primary: ${added.join(', ')}`)
    for (const [i, count] of added.entries()) {
      t.ok(count > 0, `primary ${i + 1} holds ${count} new records`)
    }
    t.equal(added.reduce((sum, count) => sum + count, 0), 30)
  })
})
