// Reads a fluidos catalog from js-libp2p, as docs/PROTOCOL.md §4.3 ("Reading a catalog
// from another implementation") describes: Kademlia `/fluidos/kad/1` in client mode,
// GET_PROVIDERS on the 16 shard keys, GET_VALUE of each member's advert key, and the
// advert envelope decoded (CBOR) and verified (ed25519) here, with no fluidos code.
//
// Usage: node read-catalog.mjs <catalog multiaddr with /p2p/> <catalog name>
// Prints one JSON object: {"catalog", "members": [{did, peer_id, shard, advert}], "problems"}.

// Node 20 lacks Promise.withResolvers, which js-libp2p 3 uses: shim it before loading libp2p.
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { multiaddr } = await import('@multiformats/multiaddr')
const { publicKeyFromRaw } = await import('@libp2p/crypto/keys')
const { base58btc } = await import('multiformats/bases/base58')
const cborg = await import('cborg')

const [addr, catalog] = process.argv.slice(2)
if (addr == null || catalog == null) {
  console.error('usage: node read-catalog.mjs <catalog multiaddr with /p2p/> <catalog name>')
  process.exit(2)
}

const utf8 = (s) => new TextEncoder().encode(s)
const didKey = (pk) => 'did:key:z' + base58btc.encode(Uint8Array.of(0xed, 0x01, ...pk)).slice(1)
const SIGNING_PREFIX = utf8('fluidos-sig-v1\u0000fluidos/advert/1\u0000')
const problems = []

// §4.2: decode the envelope and the advert, check the signature and the names.
async function checkAdvert (value, member) {
  const envelope = cborg.decode(value, { useMaps: false })
  const { payload, signature } = envelope
  if (!(payload instanceof Uint8Array) || !(signature instanceof Uint8Array) || signature.length !== 64) {
    throw new Error('envelope is not {payload: bytes, signature: bytes(64)}')
  }
  const advert = cborg.decode(payload, { useMaps: false })
  if (!(advert.node instanceof Uint8Array) || advert.node.length !== 32) {
    throw new Error('node is not bytes(32)')
  }
  const key = publicKeyFromRaw(advert.node)
  const signed = new Uint8Array(SIGNING_PREFIX.length + payload.length)
  signed.set(SIGNING_PREFIX)
  signed.set(payload, SIGNING_PREFIX.length)
  if (!(await key.verify(signed, signature))) throw new Error('bad signature')
  const node = didKey(advert.node)
  if (member != null && node !== member) throw new Error(`advert of ${node}, asked for ${member}`)
  if (advert.catalog !== catalog) throw new Error(`advert for catalog ${advert.catalog}`)
  const now = Date.now()
  if (!(Number(advert.issued_at) <= now + 60_000 && now < Number(advert.expires_at))) {
    throw new Error('advert expired or not yet valid')
  }
  return {
    node,
    catalog: advert.catalog,
    seq: Number(advert.seq),
    issued_at: Number(advert.issued_at),
    expires_at: Number(advert.expires_at),
    roles: advert.roles,
    flavors: advert.flavors.length,
    addresses: advert.addresses.map((a) => multiaddr(a).toString())
  }
}

const seq = (value) => {
  try {
    return Number(cborg.decode(cborg.decode(value, { useMaps: false }).payload, { useMaps: false }).seq)
  } catch { return -1 }
}

const node = await createLibp2p({
  addresses: { listen: [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    // kad-dht 16 requires the ping service (it pings peers before evicting them).
    ping: ping(),
    dht: kadDHT({
      protocol: '/fluidos/kad/1',
      clientMode: true,
      // Loopback and private addresses are what the test (and a site network) uses.
      peerInfoMapper: passthroughMapper,
      // Records under /fluidos/… are adverts: only a valid one is accepted, the highest seq wins.
      validators: { fluidos: async (key, value) => { await checkAdvert(value, null) } },
      selectors: {
        fluidos: (key, values) => values.reduce((best, v, i) => seq(v) > seq(values[best]) ? i : best, 0)
      }
    })
  }
})
await node.start()
const dht = node.services.dht
try {
  const ma = multiaddr(addr)
  await node.dial(ma, { signal: AbortSignal.timeout(10_000) })
  // identify tells kad-dht that the peer speaks /fluidos/kad/1; it then enters the routing table.
  for (let i = 0; i < 100 && dht.routingTable.size === 0; i++) {
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  if (dht.routingTable.size === 0) throw new Error('the catalog peer never entered the routing table (no /fluidos/kad/1 in identify?)')

  // GET_PROVIDERS on each shard key. js-libp2p's API takes a CID but only uses its
  // `multihash.bytes` as the Kademlia key, so an object carrying the raw key bytes is passed.
  const members = new Map()
  for (let shard = 0; shard < 16; shard++) {
    const key = `/fluidos/catalog/1/${catalog}/${shard}`
    const cidLike = { multihash: { bytes: utf8(key) }, toString: () => key }
    for await (const event of dht.findProviders(cidLike, { signal: AbortSignal.timeout(10_000) })) {
      if (event.name !== 'PROVIDER') continue
      for (const p of event.providers) {
        const pk = p.id.publicKey?.raw
        if (p.id.type !== 'Ed25519' || pk == null) {
          problems.push(`provider ${p.id} of shard ${shard} is not an ed25519 peer`)
          continue
        }
        if (pk[0] % 16 !== shard) problems.push(`provider ${p.id} listed under shard ${shard}`)
        members.set(didKey(pk), { did: didKey(pk), peer_id: p.id.toString(), shard })
      }
    }
  }

  // GET_VALUE of each member's advert key; the DHT's validator and selector above checked
  // the copies, the best one is checked again here for the member it must name.
  for (const m of members.values()) {
    const key = utf8(`/fluidos/advert/1/${catalog}/${m.did}`)
    let best = null
    try {
      for await (const event of dht.get(key, { signal: AbortSignal.timeout(10_000) })) {
        if (event.name === 'VALUE' && (best == null || seq(event.value) > seq(best))) best = event.value
      }
    } catch (e) {
      if (best == null) problems.push(`no advert for ${m.did}: ${e.message}`)
    }
    if (best != null) {
      try { m.advert = await checkAdvert(best, m.did) } catch (e) { problems.push(`advert of ${m.did}: ${e.message}`) }
    }
  }
  console.log(JSON.stringify({ catalog, members: [...members.values()], problems }))
} finally {
  await node.stop()
}
