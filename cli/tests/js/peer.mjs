// A js-libp2p peer for Lattice's interop test (cli/tests/js_interop.rs), driven over stdio:
// one command per line on stdin, one JSON object per line on stdout ({"ok": ...} or
// {"error": "..."}). It speaks TCP + Noise + Yamux, identify, ping, Kademlia on Lattice's
// protocol id and gossipsub, on 127.0.0.1 only, with an identity of the key type in
// LATTICE_JS_KEY. Every command gives up after TIMEOUT_MS.
import './polyfill.mjs'
import { createInterface } from 'node:readline'
import { randomBytes } from 'node:crypto'
import { createLibp2p } from 'libp2p'
import { generateKeyPair } from '@libp2p/crypto/keys'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { gossipsub } from '@libp2p/gossipsub'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { CID } from 'multiformats/cid'
import { create as digest } from 'multiformats/hashes/digest'

const TIMEOUT_MS = 30_000
const KAD = '/lattice/kad/1.0.0'
const BLAKE3 = 0x1e
const RAW = 0x55

// Until `open` is sent, this peer dials nobody but the peer of `dial`, so whatever it
// learns about others comes through that peer's DHT answers.
let only = null

// The identity's key type: Ed25519 (js-libp2p's default and Lattice's own), secp256k1,
// ECDSA or RSA, from the environment.
const keyType = process.env.LATTICE_JS_KEY ?? 'Ed25519'

const node = await createLibp2p({
  privateKey: await generateKeyPair(keyType),
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  connectionGater: {
    denyDialMultiaddr: () => false,
    denyDialPeer: (peer) => only != null && !peer.equals(only)
  },
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: KAD,
      clientMode: false,
      peerInfoMapper: passthroughMapper
    }),
    pubsub: gossipsub({ allowPublishToZeroTopicPeers: false, emitSelf: false })
  }
})
await node.services.dht.setMode('server')

const messages = []
const waiting = []
node.services.pubsub.addEventListener('message', (evt) => {
  const m = evt.detail
  const got = {
    topic: m.topic,
    from: m.type === 'signed' ? m.from.toString() : null,
    data: new TextDecoder().decode(m.data)
  }
  messages.push(got)
  for (const w of waiting.splice(0)) w()
})

function signal () {
  return AbortSignal.timeout(TIMEOUT_MS)
}

async function until (what, check) {
  const deadline = Date.now() + TIMEOUT_MS
  for (;;) {
    const v = await check()
    if (v != null) return v
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}

const commands = {
  // The peer's id and listen addresses.
  id: async () => ({
    peer_id: node.peerId.toString(),
    addrs: node.getMultiaddrs().map(String)
  }),
  // Dial one full multiaddr (with /p2p/); until `open`, dial nobody else.
  dial: async (addr) => {
    const ma = multiaddr(addr)
    only = peerIdFromString(ma.getComponents().find((c) => c.name === 'p2p').value)
    await node.dial(ma, { signal: signal() })
    return { connected: addr }
  },
  open: async () => {
    only = null
    return {}
  },
  // Peers this node has a connection to.
  connections: async () => node.getConnections().map((c) => c.remotePeer.toString()),
  // Waits for a peer in the DHT routing table that speaks Lattice's Kademlia protocol.
  'routing-table': async (peer) => until(`${peer} in the routing table`, async () => {
    const closest = await node.services.dht.routingTable.find(peerIdFromString(peer))
    return closest != null ? { peer } : null
  }),
  'find-peer': async (peer) => {
    // Not from the local peer store: through the DHT, whatever this node has seen.
    const info = await node.peerRouting.findPeer(peerIdFromString(peer), { signal: signal(), useCache: false })
    return { peer_id: info.id.toString(), addrs: info.multiaddrs.map(String) }
  },
  'find-providers': async (cid) => {
    const found = []
    for await (const p of node.contentRouting.findProviders(CID.parse(cid), { signal: signal() })) {
      found.push(p.id.toString())
      break
    }
    return found
  },
  // Provides a new random BLAKE3 CID (nobody holds such content: this is about records).
  provide: async () => {
    const cid = CID.createV1(RAW, digest(BLAKE3, randomBytes(32)))
    await node.contentRouting.provide(cid, { signal: signal() })
    return { cid: cid.toString() }
  },
  subscribe: async (topic) => {
    node.services.pubsub.subscribe(topic)
    return {}
  },
  // Waits until `peer` is subscribed to `topic` as far as this node knows.
  'wait-subscriber': async (topic, peer) => until(`${peer} to subscribe to ${topic}`, async () =>
    node.services.pubsub.getSubscribers(topic).some((p) => p.toString() === peer) ? {} : null),
  publish: async (topic, ...words) => {
    const r = await node.services.pubsub.publish(topic, new TextEncoder().encode(words.join(' ')))
    return { recipients: r.recipients.map(String) }
  },
  // Waits for a message on `topic` with exactly this text.
  'wait-message': async (topic, ...words) => {
    const text = words.join(' ')
    const deadline = Date.now() + TIMEOUT_MS
    for (;;) {
      const m = messages.find((m) => m.topic === topic && m.data === text)
      if (m != null) return m
      if (Date.now() > deadline) throw new Error(`no message ${JSON.stringify(text)} on ${topic}`)
      await new Promise((resolve) => {
        waiting.push(resolve)
        setTimeout(resolve, 200)
      })
    }
  },
  stop: async () => {
    await node.stop()
    return {}
  }
}

const lines = createInterface({ input: process.stdin })
console.log(JSON.stringify({ ok: { ready: true } }))
for await (const line of lines) {
  const [name, ...args] = line.trim().split(/\s+/)
  if (!name) continue
  try {
    const command = commands[name]
    if (command == null) throw new Error(`unknown command ${name}`)
    console.log(JSON.stringify({ ok: await command(...args) }))
  } catch (e) {
    console.log(JSON.stringify({ error: `${name}: ${e.message ?? e}` }))
  }
  if (name === 'stop') break
}
process.exit(0)
