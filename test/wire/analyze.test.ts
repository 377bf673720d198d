import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { it } from 'node:test';
import { analyzeHandshake } from '../../src/trace/analyze.js';
import { RecordSplitter } from '../../src/wire/records.js';
import { HandshakeAssembler } from '../../src/wire/handshake.js';
import { MtlsError } from '../../src/errors.js';

it('the record splitter refuses oversized records instead of buffering them', () => {
  assert.throws(
    () => new RecordSplitter().push(Buffer.from([22, 3, 3, 0xff, 0xff])),
    (e: unknown) => e instanceof MtlsError && /over the 16640-byte limit/.test(e.message),
  );
  assert.throws(() => new HandshakeAssembler().push(Buffer.from([11, 0x10, 0, 0])), /over the 262144-byte limit/);
  const split = new RecordSplitter();
  assert.deepEqual(split.push(Buffer.from([22, 3, 3, 0, 2, 1])), []);
  assert.equal(split.push(Buffer.from([2]))[0]!.fragment.length, 2);
});

it('analyzeHandshake survives 2,000 random and mutated captures: notes, never a throw or a hang', () => {
  const hello = Buffer.from(
    '16030100c4010000c00303cb34ecb1e78163ba1c38c6dacb196a6dffa21a8d9912ec18a2ef6283024dece7000006130113031302010000910000000b0009000006736572766572ff01000100000a00140012001d0017001800190100010101020103010400230000003300260024001d002099381de560e4bd43d23d8e435a7dbafeb3c06e51c13cae4d5413691e529aaf2c002b0003020304000d0020001e040305030603020308040805080604010501060102010402050206020202002d00020101001c00024001',
    'hex',
  );
  const t0 = Date.now();
  for (let i = 0; i < 2000; i++) {
    const c = Buffer.from(hello);
    for (let f = 0; f < 1 + (i % 5); f++) c[crypto.randomInt(c.length)] = crypto.randomInt(256);
    const s = crypto.randomBytes(crypto.randomInt(0, 600));
    if (i % 3 === 0 && s.length > 0) s.writeUInt8(22, 0);
    const view = analyzeHandshake(i % 7 === 0 ? c.subarray(0, crypto.randomInt(c.length)) : c, s, [
      'SERVER_HANDSHAKE_TRAFFIC_SECRET ' + 'ab'.repeat(32) + ' ' + 'cd'.repeat(32),
    ]);
    assert.ok(Array.isArray(view.notes));
  }
  assert.ok(Date.now() - t0 < 20_000);
});
