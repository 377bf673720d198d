/**
 * PEM encoding (RFC 7468): encodePemReusing, which a revocation uses to re-encode only the lines of crl.pem around
 * the octets that changed, must give exactly what encodePem gives, wherever the unchanged octets start and end.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { it } from 'node:test';
import fs from 'node:fs';
import path from 'node:path';
import { fileRange } from '../../src/io/files.js';
import { sliceParts, type Part } from '../../src/pki/octets.js';
import { decodePem, encodePem, encodePemReusing, pemLength } from '../../src/pki/pem.js';
import { tempDir } from '../helpers/pki.js';

const joined = (parts: Part[]) => sliceParts(parts, 0, Infinity).toString();

/** An old DER and its PEM, and a new DER that keeps the old one's octets [a, b) at the same offsets. */
function pemCase(most: number) {
  const oldDer = crypto.randomBytes(1 + crypto.randomInt(most));
  const a = crypto.randomInt(oldDer.length);
  const b = a + crypto.randomInt(oldDer.length - a + 1);
  // Everything else may differ, and the new one may be longer.
  const fresh = crypto.randomBytes(b + crypto.randomInt(300));
  oldDer.copy(fresh, a, a, b);
  return { oldDer, a, b, fresh, previous: Buffer.from(encodePem('X509 CRL', oldDer)) };
}

it('encodePemReusing equals encodePem for any unchanged range and any split into parts', () => {
  for (let round = 0; round < 300; round++) {
    const { oldDer, a, b, fresh, previous } = pemCase(2000);
    const cut = crypto.randomInt(fresh.length + 1);
    const parts = [fresh.subarray(0, cut), fresh.subarray(cut)];
    assert.equal(previous.length, pemLength('X509 CRL', oldDer.length));
    const got = joined(encodePemReusing('X509 CRL', parts, previous, [a, b]));
    assert.equal(got, encodePem('X509 CRL', fresh), `old ${oldDer.length}, same [${a}, ${b}), new ${fresh.length}`);
    assert.ok(decodePem(got)[0]!.der.equals(fresh));
  }
});

it('reuses the lines it is told are unchanged, and only those', () => {
  const der = crypto.randomBytes(48 * 10);
  const previous = Buffer.from(encodePem('X', der));
  // A previous PEM whose reused lines were damaged shows through: the caller must only pass its own output.
  const damaged = Buffer.from(previous);
  damaged[17 + 1 + 65 * 5] = damaged[17 + 1 + 65 * 5] === 0x41 ? 0x42 : 0x41;
  const out = joined(encodePemReusing('X', [der], damaged, [48 * 2, 48 * 8]));
  assert.notEqual(out, encodePem('X', der));
  const outside = joined(encodePemReusing('X', [der], damaged, [48 * 6, 48 * 8]));
  assert.equal(outside, encodePem('X', der), 'line 5 lies outside [6, 8) and is encoded afresh');
});

it('gives the same from octets read from files in pieces of any size as from buffers (a revocation reads them so)', () => {
  const dir = tempDir('mtls-pem-pieces-');
  for (let round = 0; round < 100; round++) {
    const { a, b, fresh, previous } = pemCase(3000);
    // The old PEM after 100 octets of something else, as the intermediate's block follows the root's in crl.pem;
    // the new DER's middle from a file too, as the entries of the previous CRL are.
    const file = path.join(dir, `r${round}`);
    fs.writeFileSync(file, Buffer.concat([crypto.randomBytes(100), previous, fresh]));
    const fd = fs.openSync(file, 'r');
    try {
      const piece = 1 + crypto.randomInt(200);
      const all = fileRange(fd, 0, 100 + previous.length + fresh.length, piece);
      const oldPem = all.range(100, 100 + previous.length);
      const cut = [crypto.randomInt(fresh.length + 1), crypto.randomInt(fresh.length + 1)].sort((x, y) => x - y);
      const base = 100 + previous.length;
      const parts: Part[] = [
        fresh.subarray(0, cut[0]),
        all.range(base + cut[0]!, base + cut[1]!),
        fresh.subarray(cut[1]),
      ];
      const got = joined(encodePemReusing('X509 CRL', parts, oldPem, [a, b]));
      assert.equal(got, encodePem('X509 CRL', fresh), `piece ${piece}, same [${a}, ${b}), new ${fresh.length}`);
    } finally {
      fs.closeSync(fd);
    }
  }
});
