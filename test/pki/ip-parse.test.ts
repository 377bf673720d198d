import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import net from 'node:net';
import { test } from 'node:test';
import { checkIpAddress, ipBytesToText, parseIp } from '../../src/pki/names.js';

/** Node's own answer: isIP decides, the WHATWG URL parser gives the bytes (canonical, without a dotted tail). */
function nodeBytes(text: string): Buffer | undefined {
  const kind = net.isIP(text);
  if (kind === 0 || text.includes('%')) return undefined;
  if (kind === 4) return Buffer.from(text.split('.').map(Number));
  const canon = new URL(`http://[${text}]/`).hostname.slice(1, -1);
  const b = Buffer.alloc(16);
  const [h, t] = canon.split('::') as [string, string | undefined];
  const head = h ? h.split(':') : [];
  const tail = t ? t.split(':') : [];
  const words = [...head, ...new Array(t === undefined ? 0 : 8 - head.length - tail.length).fill('0'), ...tail];
  words.forEach((w, i) => b.writeUInt16BE(parseInt(w, 16), i * 2));
  return b;
}

const CORPUS = [
  '',
  '.',
  ':',
  '::',
  ':::',
  '::1',
  '1::',
  '1::2',
  '1:2:3:4:5:6:7:8',
  '1:2:3:4:5:6:7::',
  '::2:3:4:5:6:7:8',
  '1:2:3:4:5:6:7:8:9',
  '1:2:3:4:5:6:7',
  ':1:2:3:4:5:6:7',
  '1:2:3:4:5:6:7:',
  '1::2::3',
  'fe80::1',
  'FE80::ABCD',
  '12345::',
  'g::',
  '::ffff:1.2.3.4',
  '::1.2.3.4',
  '1:2:3:4:5:6:1.2.3.4',
  '1:2:3:4:5:6:7:1.2.3.4',
  '1.2.3.4::',
  '::1.2.3',
  '::1.2.3.256',
  '::01.2.3.4',
  '0.0.0.0',
  '255.255.255.255',
  '256.1.1.1',
  '1.2.3',
  '1.2.3.4.5',
  '01.2.3.4',
  '1.2.3.04',
  '1..2.3',
  ' 1.2.3.4',
  '1.2.3.4 ',
  '0x1.2.3.4',
  '1.2.3.-4',
  '+1.2.3.4',
  '[::1]',
  'fe80::1%eth0',
  '::ffff:0:0',
  '2001:db8::',
  '2001:0db8:0000:0000:0000::1',
  '0000:0000:0000:0000:0000:0000:0000:0001',
  '00000::1',
  '1:2:3:4:5::6:7:8',
  '::1:2:3:4:5:6:7',
  '1:2:3:4:5:6::1.2.3.4',
];

test('parseIp agrees with node:net on a corpus of valid and malformed addresses', () => {
  for (const text of CORPUS) {
    assert.deepEqual(parseIp(text), nodeBytes(text), `'${text}'`);
  }
});

test('parseIp agrees with node:net on 20,000 generated near-addresses', () => {
  const alphabet = [
    '0',
    '1',
    '9',
    'a',
    'f',
    'F',
    'g',
    ':',
    ':',
    '::',
    '.',
    '.',
    '255',
    '256',
    '01',
    'ffff',
    '12345',
    '1.2.3.4',
  ];
  for (let i = 0; i < 20_000; i++) {
    const n = 1 + crypto.randomInt(14);
    let text = '';
    for (let k = 0; k < n; k++) text += alphabet[crypto.randomInt(alphabet.length)];
    assert.deepEqual(parseIp(text), nodeBytes(text), `'${text}'`);
  }
  // Valid ones in every compression, from random bytes.
  for (let i = 0; i < 5_000; i++) {
    const b = crypto.randomBytes(16);
    for (let k = 0; k < 16; k++) if (crypto.randomInt(3) === 0) b[k] = 0;
    const text = ipBytesToText(b);
    assert.deepEqual(parseIp(text), b, text);
    assert.deepEqual(parseIp(text), nodeBytes(text), text);
  }
});

test('checkIpAddress returns the canonical form and refuses zones', () => {
  assert.equal(checkIpAddress('2001:0DB8:0000:0000:0000:0000:0000:0001'), '2001:db8::1');
  assert.equal(checkIpAddress('10.0.0.1'), '10.0.0.1');
  assert.throws(() => checkIpAddress('fe80::1%eth0'), /zone/);
  assert.throws(() => checkIpAddress('01.2.3.4'), /not an IP address/);
});
