/**
 * The leaf's key is judged from its DER (spkiWeakness) instead of being loaded, which costs more than the rest of a
 * path validation: both ways must reach the same verdict, and a point off its curve must not pass for a key.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { it } from 'node:test';
import { readChildren, readSingle, seq, tlv } from '../../src/pki/der.js';
import { keyWeakness, loadSpki, spkiDer, spkiWeakness } from '../../src/pki/keys.js';
import { OID } from '../../src/pki/oid.js';
import { verifyChain } from '../../src/pki/verify.js';
import { makeCert } from '../helpers/pki.js';

const pairs: [string, crypto.KeyObject][] = [
  ['P-256', crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey],
  ['P-384', crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey],
  ['P-521', crypto.generateKeyPairSync('ec', { namedCurve: 'P-521' }).publicKey],
  ['P-192', crypto.generateKeyPairSync('ec', { namedCurve: 'prime192v1' }).publicKey],
  ['secp256k1', crypto.generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey],
  ['RSA 1024', crypto.generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey],
  ['RSA 2048', crypto.generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey],
  ['RSA 2047', crypto.generateKeyPairSync('rsa', { modulusLength: 2047 }).publicKey],
  ['Ed25519', crypto.generateKeyPairSync('ed25519').publicKey],
  ['DSA', crypto.generateKeyPairSync('dsa', { modulusLength: 2048, divisorLength: 256 }).publicKey],
];

it('judges a key from its DER exactly as from the loaded key', () => {
  for (const [name, key] of pairs) {
    const fast = spkiWeakness(spkiDer(key));
    assert.notEqual(fast, undefined, `${name} should be judged from the DER`);
    assert.equal(fast?.why ?? null, keyWeakness(key), name);
    assert.equal(fast?.malformed ?? false, false, name);
  }
  // A compressed point is left to the loader (which accepts it).
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.generateKeys();
  const good = spkiDer(pairs[0]![1]);
  const algorithm = readChildren(readSingle(good, 'spki').value, 'spki')[0]!;
  const compressed = seq(
    good.subarray(2 + algorithm.start, 2 + algorithm.end),
    tlv(0x03, Buffer.concat([Buffer.from([0]), ecdh.getPublicKey(null, 'compressed')])),
  );
  assert.equal(crypto.createPublicKey({ key: compressed, format: 'der', type: 'spki' }).asymmetricKeyType, 'ec');
  assert.equal(spkiWeakness(compressed), undefined);
});

it('refuses an EC point that is not on its curve, where loading the key would fail', () => {
  const good = spkiDer(crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey);
  const bad = Buffer.from(good);
  bad[bad.length - 1]! ^= 0x01; // y changes: (x, y') is not on P-256
  assert.throws(() => crypto.createPublicKey({ key: bad, format: 'der', type: 'spki' }));
  assert.deepEqual(spkiWeakness(bad), { malformed: true, why: 'its EC public key is not a point on P-256' });

  const root = makeCert({ cn: 'Curve Root', ca: true });
  const leaf = makeCert({ cn: 'off-curve', issuer: root, dns: ['c.example.org'], eku: [OID.serverAuth], rawSpki: bad });
  const r = verifyChain(leaf.cert, { trustAnchors: [root.cert], at: new Date(), purpose: 'server' });
  assert.equal(r.valid, false);
  assert.deepEqual(
    r.problems.map((p) => [p.code, p.message]),
    [['MALFORMED', "'off-curve': its EC public key is not a point on P-256"]],
  );
});

it('loads a key through JWK to the same key the DER decoder makes, and refuses what the decoder refuses', () => {
  for (const [name, key] of pairs) {
    const der = spkiDer(key);
    assert.ok(loadSpki(der).export({ type: 'spki', format: 'der' }).equals(der), name);
  }
  const bad = Buffer.from(spkiDer(pairs[0]![1]));
  bad[bad.length - 1]! ^= 0x01;
  assert.throws(() => loadSpki(bad));
});
