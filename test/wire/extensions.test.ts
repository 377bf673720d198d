import assert from 'node:assert/strict';
import { it } from 'node:test';
import { decodeClientHello } from '../../src/wire/handshake.js';
import {
  clientOffer,
  decodeAlpn,
  decodeKeyShareGroups,
  decodeServerName,
  decodeSignatureAlgorithms,
  decodeSupportedVersions,
} from '../../src/wire/extensions.js';

const u16 = (n: number) => Buffer.from([n >> 8, n & 0xff]);
const vec = (lenBytes: 1 | 2, b: Buffer) =>
  Buffer.concat([lenBytes === 1 ? Buffer.from([b.length]) : u16(b.length), b]);
const ext = (type: number, data: Buffer) => Buffer.concat([u16(type), vec(2, data)]);

function clientHello(extensions: Buffer[]): Buffer {
  return Buffer.concat([
    u16(0x0303),
    Buffer.alloc(32, 7),
    vec(1, Buffer.alloc(0)),
    vec(2, u16(0x1301)),
    vec(1, Buffer.from([0])),
    vec(2, Buffer.concat(extensions)),
  ]);
}

it('decodes what a ClientHello offers into typed values', () => {
  const body = clientHello([
    ext(0x002b, vec(1, Buffer.concat([u16(0x0304), u16(0x0303)]))),
    ext(0x000a, vec(2, Buffer.concat([u16(0x001d), u16(0x0017)]))),
    ext(0x0033, vec(2, Buffer.concat([u16(0x001d), vec(2, Buffer.alloc(32, 1))]))),
    ext(0x000d, vec(2, Buffer.concat([u16(0x0403), u16(0x0804)]))),
    ext(0x0000, vec(2, Buffer.concat([Buffer.from([0]), vec(2, Buffer.from('localhost'))]))),
    ext(0x0010, vec(2, Buffer.concat([vec(1, Buffer.from('h2')), vec(1, Buffer.from('http/1.1'))]))),
  ]);
  assert.deepEqual(clientOffer(decodeClientHello(body).extensions), {
    versions: [0x0304, 0x0303],
    groups: [0x001d, 0x0017],
    keyShareGroups: [0x001d],
    signatureAlgorithms: [0x0403, 0x0804],
    serverName: 'localhost',
    alpn: ['h2', 'http/1.1'],
  });
});

it('refuses a ClientHello that repeats an extension (RFC 8446 4.2)', () => {
  const sni = ext(0x0000, vec(2, Buffer.concat([Buffer.from([0]), vec(2, Buffer.from('a.example'))])));
  assert.throws(
    () => decodeClientHello(clientHello([sni, ext(0x000a, vec(2, u16(0x001d))), sni])),
    /duplicate server_name extension/,
  );
});

it('refuses malformed extension bodies instead of reading past or around them', () => {
  assert.throws(() => decodeSupportedVersions(Buffer.concat([vec(1, u16(0x0304)), Buffer.from([0])])), /trailing/);
  assert.throws(() => decodeSupportedVersions(vec(1, Buffer.from([3, 4, 3]))), /not a list of 16-bit values/);
  assert.throws(() => decodeSignatureAlgorithms(Buffer.from([0, 4, 4, 3])), /needs 4 bytes/);
  assert.throws(
    () => decodeKeyShareGroups(vec(2, Buffer.concat([u16(0x001d), u16(32), Buffer.alloc(8)]))),
    /needs 32 bytes/,
  );
  const twoNames = vec(
    2,
    Buffer.concat([Buffer.from([0]), vec(2, Buffer.from('a')), Buffer.from([0]), vec(2, Buffer.from('b'))]),
  );
  assert.throws(() => decodeServerName(twoNames), /more than one host_name/);
  assert.throws(
    () => decodeAlpn(vec(2, Buffer.concat([vec(1, Buffer.from('h2')), vec(1, Buffer.alloc(0))]))),
    /empty protocol name/,
  );
});
