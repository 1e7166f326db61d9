// Verifies fluidos contract credentials with the JavaScript W3C stack (jsonld.js,
// @digitalbazaar/vc, the eddsa-rdfc-2022 cryptosuite, did:key), which shares no code
// with ssi, the Rust library fluidos signs with. Offline: every context and every
// did:key is resolved by a static document loader; any other URL is an error.
//
//   node verify.mjs <credential.json>...     one JSON line per file, exit 0 iff all verify
//   node verify.mjs --nquads <credential.json>
//                                            prints the RDFC-1.0 N-Quads of the proof
//                                            options and of the document, as hashed
//   node verify.mjs --peer-id <did:key>...   one line per key: the libp2p PeerId that
//                                            @libp2p/peer-id derives from the did:key's
//                                            ed25519 public key, then the did:key that
//                                            the PeerId converts back to
//
// Run by fluidos-contracts/tests/vc_interop.rs; `npm ci` in this folder first.

import {readFile} from 'node:fs/promises';

import * as vc from '@digitalbazaar/vc';
import jsonld from 'jsonld';
import {DataIntegrityProof} from '@digitalbazaar/data-integrity';
import {cryptosuite as eddsaRdfc2022} from '@digitalbazaar/eddsa-rdfc-2022-cryptosuite';
import * as Ed25519Multikey from '@digitalbazaar/ed25519-multikey';
import {driver as didKeyDriver} from '@digitalbazaar/did-method-key';
import {contexts as credentialsContexts} from '@digitalbazaar/credentials-context';
import dataIntegrityContext from '@digitalbazaar/data-integrity-context';
import multikeyContext from '@digitalbazaar/multikey-context';
import didContext from 'did-context';
import {peerIdFromPublicKey, peerIdFromString} from '@libp2p/peer-id';
import {publicKeyFromRaw} from '@libp2p/crypto/keys';
import {base58btc} from 'multiformats/bases/base58';

const didKey = didKeyDriver();
didKey.use({multibaseMultikeyHeader: 'z6Mk', fromMultibase: Ed25519Multikey.from});

// Every context a fluidos credential or a did:key document may name, from npm packages.
const staticContexts = new Map([
  ...credentialsContexts,
  ...dataIntegrityContext.contexts,
  ...multikeyContext.contexts,
  ...didContext.contexts,
]);

async function documentLoader(url) {
  if (staticContexts.has(url)) {
    return {contextUrl: null, documentUrl: url, document: structuredClone(staticContexts.get(url))};
  }
  if (url.startsWith('did:key:')) {
    return {contextUrl: null, documentUrl: url, document: await didKey.get({url})};
  }
  throw new Error(`offline document loader: refusing to fetch ${url}`);
}

async function verify(file) {
  const credential = JSON.parse(await readFile(file, 'utf8'));
  const suite = new DataIntegrityProof({cryptosuite: eddsaRdfc2022});
  const result = await vc.verifyCredential({credential, suite, documentLoader});
  const errors = [];
  const collect = e => {
    if (e) {
      errors.push(e.message ?? String(e));
    }
  };
  collect(result.error);
  for (const r of result.results ?? []) {
    collect(r.error);
  }
  return {file, verified: result.verified === true, errors: [...new Set(errors)]};
}

async function nquads(file) {
  const credential = JSON.parse(await readFile(file, 'utf8'));
  const {proof, ...document} = credential;
  const {proofValue, ...options} = proof;
  options['@context'] = document['@context'];
  const canonize = doc => jsonld.canonize(doc, {
    algorithm: 'RDFC-1.0', format: 'application/n-quads', documentLoader, safe: true,
  });
  process.stdout.write('# proof options\n' + await canonize(options));
  process.stdout.write('# document\n' + await canonize(document));
}

// did:key:z6Mk… is base58btc(0xed 0x01 ‖ 32-byte ed25519 public key).
async function peerIdOf(did) {
  const bytes = base58btc.decode(did.slice('did:key:'.length));
  if (bytes.length !== 34 || bytes[0] !== 0xed || bytes[1] !== 0x01) {
    throw new Error(`${did} is not an ed25519 did:key`);
  }
  const peerId = peerIdFromPublicKey(publicKeyFromRaw(bytes.subarray(2)));
  const back = peerIdFromString(peerId.toString()).publicKey;
  const raw = back.raw;
  const again = 'did:key:' + base58btc.encode(Uint8Array.from([0xed, 0x01, ...raw]));
  return `${did} ${peerId.toString()} ${again}`;
}

const args = process.argv.slice(2);
if (args[0] === '--nquads') {
  await nquads(args[1]);
} else if (args[0] === '--peer-id') {
  for (const did of args.slice(1)) {
    console.log(await peerIdOf(did));
  }
} else {
  let all = args.length > 0;
  for (const file of args) {
    let line;
    try {
      line = await verify(file);
    } catch (e) {
      line = {file, verified: false, errors: [e.message ?? String(e)]};
    }
    all &&= line.verified;
    console.log(JSON.stringify(line));
  }
  process.exitCode = all ? 0 : 1;
}
