import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { describe, it } from 'node:test';
import { MtlsError } from '../../src/errors.js';
import { parseCertificate, readCertificates } from '../../src/pki/certificate.js';
import { countTlvsInPieces, decodeOid, encodeOid, readChildren, readSingle, tlv } from '../../src/pki/der.js';
import { OID } from '../../src/pki/oid.js';
import { verifyChain } from '../../src/pki/verify.js';
import { makeCert, openssl } from '../helpers/pki.js';

describe('certificate parsing', () => {
  const ca = makeCert({ cn: 'Parse Root', ca: true });
  const leaf = makeCert({
    cn: 'leaf',
    issuer: ca,
    dns: ['a.example.org'],
    ip: ['10.0.0.1', '2001:db8::1'],
    uri: ['spiffe://example.org/x'],
    email: ['a@example.org'],
    eku: [OID.serverAuth, OID.clientAuth],
  });

  it('agrees with openssl on every field', () => {
    const text = openssl(
      [
        'x509',
        '-noout',
        '-serial',
        '-fingerprint',
        '-sha256',
        '-ext',
        'subjectAltName',
        '-subject',
        '-nameopt',
        'RFC2253',
      ],
      leaf.pem,
    ).stdout;
    assert.match(text, new RegExp(`serial=${leaf.cert.serialHex.toUpperCase()}`));
    assert.match(text, new RegExp(leaf.cert.fingerprint256));
    assert.match(
      text,
      /DNS:a\.example\.org, IP Address:10\.0\.0\.1, IP Address:2001:DB8:0:0:0:0:0:1, email:a@example\.org, URI:spiffe:\/\/example\.org\/x/,
    );
    assert.deepEqual(leaf.cert.san!.ip, ['10.0.0.1', '2001:db8::1']);
    assert.deepEqual(
      leaf.cert.subject.map((a) => `${a.type}=${a.value}`),
      ['CN=leaf'],
    );
    assert.deepEqual(leaf.cert.problems, []);
  });

  it('reads PEM bundles in order and DER', () => {
    const both = readCertificates(Buffer.from(leaf.pem + ca.pem), 'bundle');
    assert.deepEqual(
      both.map((c) => c.subject[0]!.value),
      ['leaf', 'Parse Root'],
    );
    assert.equal(readCertificates(leaf.cert.der, 'der')[0]!.fingerprint256, leaf.cert.fingerprint256);
  });

  it('round-trips OIDs, including large arcs', () => {
    for (const oid of ['1.2.840.113549.1.1.11', '2.5.29.37.0', '1.3.6.1.4.1.55555.4294967295', '2.999.3']) {
      const enc = encodeOid(oid);
      assert.equal(decodeOid(readSingle(enc, 'oid').value), oid);
    }
  });

  /** countTlvsInPieces of one piece. */
  const countTlvs = (b: Buffer) => countTlvsInPieces([b], b.length, (from, to) => b.subarray(from, to));
  it('counts whole TLVs as readChildren does, and refuses what readChildren refuses (a revocation appends only then)', () => {
    const der = Buffer.from(leaf.cert.der);
    const children = readSingle(der, 'certificate').value;
    assert.equal(countTlvs(children), readChildren(children, 'certificate').length);
    assert.equal(countTlvs(Buffer.concat([der, der, der])), 3);
    assert.equal(countTlvs(Buffer.alloc(0)), 0);
    for (const bad of [
      der.subarray(0, der.length - 1), // truncated value
      Buffer.from([0x30]), // truncated header
      Buffer.from([0x30, 0x84, 0, 0, 0]), // truncated length
      Buffer.from([0x30, 0x80, 0, 0]), // indefinite length
      Buffer.from([0x30, 0x81, 0x05, 1, 2, 3, 4, 5]), // non-minimal length
      Buffer.from([0x30, 0x82, 0x00, 0x90, ...Buffer.alloc(0x90)]), // non-minimal length, leading zero
      Buffer.from([0x1f, 0x01, 0x00]), // high tag number
      Buffer.from([0x30, 0x85, 1, 0, 0, 0, 0]), // length of five octets
    ]) {
      assert.equal(countTlvs(bad), -1, bad.toString('hex').slice(0, 20));
      assert.throws(() => readChildren(bad, 'x'), MtlsError);
    }
    // In pieces of any size (a header may be cut by a piece's end), the same counts, good and bad.
    const inPieces = (b: Buffer, size: number) => {
      const pieces = function* () {
        const scratch = Buffer.alloc(size); // each piece valid only until the next, as fileRange gives them
        for (let at = 0; at < b.length; at += size) yield scratch.subarray(0, b.copy(scratch, 0, at, at + size));
      };
      return countTlvsInPieces(pieces(), b.length, (from, to) => Buffer.from(b.subarray(from, to)));
    };
    const many = Buffer.concat(Array.from({ length: 50 }, (_, i) => Buffer.from(tlv(0x30, Buffer.alloc(i * 7, i)))));
    for (const size of [1, 2, 3, 5, 6, 7, 13, 64, 1 << 16]) {
      assert.equal(inPieces(many, size), 50, `pieces of ${size}`);
      assert.equal(inPieces(der, size), 1);
      assert.equal(inPieces(many.subarray(0, many.length - 1), size), -1, `truncated, pieces of ${size}`);
      assert.equal(inPieces(Buffer.from([0x30, 0x81, 0x05, 1, 2, 3, 4, 5]), size), -1);
    }
  });

  const badDer = (name: string, mutate: (b: Buffer) => Buffer) =>
    it(`rejects ${name} with BAD_DER`, () => {
      assert.throws(
        () => parseCertificate(mutate(Buffer.from(leaf.cert.der))),
        (e: unknown) => e instanceof MtlsError && e.code === 'BAD_DER' && !e.message.includes('\n'),
      );
    });
  badDer('trailing bytes', (b) => Buffer.concat([b, Buffer.from([0])]));
  badDer('truncation', (b) => b.subarray(0, b.length - 10));
  badDer('an indefinite length', (b) => Buffer.concat([Buffer.from([0x30, 0x80]), b.subarray(4), Buffer.from([0, 0])]));
  badDer('an empty input', () => Buffer.alloc(0));
  badDer('a non-minimal length', (b) => Buffer.concat([Buffer.from([0x30, 0x83, 0x00]), b.subarray(2)]));

  it('reports, rather than throws on, soft defects: explicit critical=FALSE, duplicate extension', () => {
    const dup = makeCert({
      cn: 'dup',
      issuer: ca,
      extra: [
        { oid: OID.extKeyUsage, critical: false, value: Buffer.from('300a06082b06010505070301', 'hex') },
        { oid: OID.extKeyUsage, critical: false, value: Buffer.from('300a06082b06010505070302', 'hex') },
      ],
    });
    assert.ok(dup.cert.problems.some((p) => /appears twice/.test(p)));
    const r = verifyChain(dup.cert, { trustAnchors: [ca.cert], at: new Date() });
    assert.equal(r.problems[0]!.code, 'MALFORMED');
  });

  it('survives 3,000 random mutations: a certificate or BAD_DER, nothing else, and quickly', () => {
    const base = leaf.cert.der;
    const t0 = Date.now();
    let parsed = 0;
    for (let i = 0; i < 3000; i++) {
      const b = Buffer.from(base);
      const flips = 1 + (i % 4);
      for (let f = 0; f < flips; f++) b[crypto.randomInt(b.length)] = crypto.randomInt(256);
      const cut = i % 7 === 0 ? b.subarray(0, crypto.randomInt(b.length)) : b;
      try {
        parseCertificate(cut);
        parsed++;
      } catch (e) {
        assert.ok(e instanceof MtlsError && e.code === 'BAD_DER', `unexpected ${String(e)}`);
      }
    }
    assert.ok(parsed > 0);
    assert.ok(Date.now() - t0 < 20_000);
  });

  it('decodes hostile SANs without trusting them: NUL bytes, bad IP lengths, control characters', () => {
    // SAN with dNSName "a\0.evil.org", a 5-byte IP and a URI with a newline, hand-encoded.
    const dns = Buffer.concat([Buffer.from([0x82, 11]), Buffer.from('a\0.evil.org', 'latin1')]);
    const ip = Buffer.from([0x87, 5, 1, 2, 3, 4, 5]);
    const uri = Buffer.concat([Buffer.from([0x86, 9]), Buffer.from('spiffe:/\n', 'latin1')]);
    const body = Buffer.concat([dns, ip, uri]);
    const san = Buffer.concat([Buffer.from([0x30, body.length]), body]);
    const c = makeCert({
      cn: 'hostile',
      issuer: ca,
      extra: [{ oid: OID.subjectAltName, critical: false, value: san }],
    });
    assert.deepEqual(c.cert.san!.dns, []);
    assert.deepEqual(c.cert.san!.ip, []);
    assert.equal(c.cert.problems.length, 3);
    assert.ok(c.cert.problems.some((p) => /byte 0x00/.test(p)));
    assert.ok(c.cert.problems.some((p) => /5 bytes/.test(p)));
    assert.equal(verifyChain(c.cert, { trustAnchors: [ca.cert], at: new Date(), dns: 'a' }).valid, false);
  });
});
