import assert from 'node:assert/strict';
import fs from 'node:fs';
import { describe, it } from 'node:test';
import { MtlsError } from '../../src/errors.js';
import { createCsr, parseCsr } from '../../src/pki/csr.js';
import { encodeOid, readChildren, readSingle, seq, tlv } from '../../src/pki/der.js';
import { basicConstraintsExt, subjectAltNameExt } from '../../src/pki/extensions.js';
import { generateKeyPair } from '../../src/pki/keys.js';
import { buildName } from '../../src/pki/names.js';
import { OID } from '../../src/pki/oid.js';
import { encodePem } from '../../src/pki/pem.js';
import { openssl, opensslCsr, tempDir } from '../helpers/pki.js';

// PKCS#10 requests are built and read by our DER code (src/pki/csr.ts); openssl is the peer that checks both ways.
describe('certificate requests (PKCS#10)', () => {
  const subject = buildName([
    { oid: OID.organizationName, value: 'Acme' },
    { oid: OID.commonName, value: 'api' },
  ]);

  it('createCsr: openssl verifies the request and reads its subject and requested names', () => {
    const { privateKey, publicKey } = generateKeyPair('ec-p256');
    const der = createCsr(privateKey, subject, [
      subjectAltNameExt({ dns: ['api.example.org'], ip: ['10.1.2.3'] }, false),
    ]);
    const pem = openssl(['req', '-verify', '-noout', '-text'], encodePem('CERTIFICATE REQUEST', der));
    assert.equal(pem.status, 0, pem.stderr);
    assert.match(pem.stderr + pem.stdout, /verify OK|Certificate request self-signature verify OK/);
    assert.match(pem.stdout, /Subject: O\s?=\s?Acme, CN\s?=\s?api/);
    assert.match(pem.stdout, /DNS:api\.example\.org, IP Address:10\.1\.2\.3/);
    const back = parseCsr(der);
    assert.deepEqual(
      back.subject.map((a) => a.value),
      ['Acme', 'api'],
    );
    assert.deepEqual(back.san?.dns, ['api.example.org']);
    assert.deepEqual(back.san?.ip, ['10.1.2.3']);
    assert.equal(back.requestsCa, false);
    assert.ok(back.publicKey.equals(publicKey));
    // No extensions: an empty attribute set, as openssl writes it.
    const bare = createCsr(privateKey, subject);
    const info = readChildren(readSingle(bare, 'csr').value, 'csr')[0]!;
    assert.deepEqual(readChildren(info.value, 'info')[3]?.value, Buffer.alloc(0));
    assert.equal(openssl(['req', '-verify', '-noout'], encodePem('CERTIFICATE REQUEST', bare)).status, 0);
  });

  it('parseCsr reads what openssl makes: requested names and a CA request', () => {
    const dir = tempDir();
    const make = (ext: string[]) =>
      parseCsr(fs.readFileSync(opensslCsr(dir, '/O=Acme/CN=from openssl', ext, `r${ext.length}`).req));
    const plain = make([]);
    assert.deepEqual(
      plain.subject.map((a) => a.value),
      ['Acme', 'from openssl'],
    );
    const asked = make([
      'subjectAltName=DNS:x.example.org,URI:spiffe://example.org/x',
      'basicConstraints=critical,CA:TRUE',
    ]);
    assert.deepEqual(asked.san?.dns, ['x.example.org']);
    assert.deepEqual(asked.san?.uri, ['spiffe://example.org/x']);
    assert.equal(asked.requestsCa, true);
  });

  it('refuses malformed requests with one line each, before any key or signature is used', () => {
    const { privateKey } = generateKeyPair('ec-p256');
    const good = createCsr(privateKey, subject, [basicConstraintsExt(false)]);
    const [info, alg, sig] = readChildren(readSingle(good, 'csr').value, 'csr');
    const raw = (t: { start: number; end: number }) => readSingle(good, 'csr').value.subarray(t.start, t.end);
    const infoParts = readChildren(info!.value, 'info').map((t) => info!.value.subarray(t.start, t.end));
    const withInfo = (parts: Buffer[]) => seq(seq(...parts), raw(alg!), raw(sig!));
    const cases: [string, Buffer, RegExp][] = [
      ['truncated', good.subarray(0, good.length - 5), /not a valid PKCS#10/],
      ['trailing bytes', Buffer.concat([good, Buffer.from([0])]), /not a valid PKCS#10/],
      ['version 2', withInfo([tlv(0x02, Buffer.from([1])), ...infoParts.slice(1)]), /version is not v1/],
      ['no key', withInfo(infoParts.slice(0, 2)), /subject or subjectPKInfo is missing/],
      ['attributes not [0]', withInfo([...infoParts.slice(0, 3), tlv(0x31, Buffer.alloc(0))]), /unexpected fields/],
      [
        'extensionRequest not a SEQUENCE',
        withInfo([
          ...infoParts.slice(0, 3),
          tlv(0xa0, seq(encodeOid(OID.extensionRequest), tlv(0x31, tlv(0x04, Buffer.alloc(1))))),
        ]),
        /not a SEQUENCE of extensions/,
      ],
      [
        'indefinite length (BER)',
        Buffer.concat([Buffer.from([0x30, 0x80]), readSingle(good, 'csr').value, Buffer.from([0, 0])]),
        /not a valid PKCS#10/,
      ],
      [
        'signature with unused bits',
        seq(raw(info!), raw(alg!), tlv(0x03, Buffer.concat([Buffer.from([1]), sig!.value.subarray(1)]))),
        /unused bits/,
      ],
    ];
    for (const [name, der, why] of cases) {
      assert.throws(
        () => parseCsr(der),
        (e: unknown) =>
          e instanceof MtlsError && e.code === 'BAD_CSR' && why.test(e.message) && !e.message.includes('\n'),
        name,
      );
    }
    // The same request with its parts intact still parses: the cases above fail for their defect alone.
    assert.equal(parseCsr(withInfo(infoParts)).requestsCa, false);
  });

  it('hostile bytes: 3,000 mutated requests each parse or fail with one BAD_CSR/CSR_REFUSED line, never a crash', () => {
    const { privateKey } = generateKeyPair('ec-p256');
    const good = createCsr(privateKey, subject, [
      subjectAltNameExt({ dns: ['a.example.org'], uri: ['spiffe://example.org/a'] }, false),
      basicConstraintsExt(false),
    ]);
    let seed = 0x2545f491;
    const rand = (n: number) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const codes = new Map<string, number>();
    for (let i = 0; i < 3000; i++) {
      const der = Buffer.from(good);
      // 1-4 changes: an octet set, one cut short, or one grown by garbage.
      for (let k = rand(4) + 1; k > 0; k--) der[rand(der.length)] = rand(256);
      const input = i % 10 === 0 ? der.subarray(0, rand(der.length)) : der;
      try {
        parseCsr(input);
        codes.set('parsed', (codes.get('parsed') ?? 0) + 1);
      } catch (e) {
        assert.ok(e instanceof MtlsError, `case ${i}: ${(e as Error).stack}`);
        assert.ok(['BAD_CSR', 'CSR_REFUSED'].includes(e.code), `case ${i}: ${e.code} ${e.message}`);
        assert.ok(!e.message.includes('\n') && e.message.length < 400, `case ${i}: ${e.message}`);
        codes.set(e.code, (codes.get(e.code) ?? 0) + 1);
      }
    }
    // Most mutations break the signature or the structure; the test must have exercised both sides.
    assert.ok((codes.get('BAD_CSR') ?? 0) > 2500, JSON.stringify([...codes]));
  });
});
