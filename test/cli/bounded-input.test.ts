import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fileRange } from '../../src/io/files.js';
import { BIN, ROOT, tempDir } from '../helpers/pki.js';

/** `mtls ...` with a hard timeout: a command that reads without bound would hang here, not answer. */
function run(args: string[], input?: Buffer) {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 20_000,
    input,
    maxBuffer: 1 << 20,
  });
  return { status: r.status, stderr: r.stderr, timedOut: r.error !== undefined || r.signal !== null };
}

describe('endless or huge input is refused, never read without bound', () => {
  it(
    'inspect, verify (file and --ca), sign and proxy --config on /dev/zero: one ' +
      'line naming the limit, exit non-zero',
    () => {
      const home = path.join(tempDir('mtls-bounded-'), 'ca');
      assert.equal(run(['ca', 'init', '--home', home, '--name', 'Bounded']).status, 0);
      const cases: [string, string[]][] = [
        ['inspect', ['inspect', '/dev/zero']],
        ['verify', ['verify', '/dev/zero', '--ca', '/dev/zero']],
        ['sign', ['sign', '/dev/zero', '--profile', 'client', '--home', home]],
        ['proxy --config', ['proxy', '--config', '/dev/zero', '--check']],
      ];
      for (const [what, args] of cases) {
        const r = run(args);
        assert.equal(r.timedOut, false, `${what} did not answer within 20 s`);
        assert.notEqual(r.status, 0, what);
        assert.match(r.stderr, /is larger than \d+ MiB, the most accepted for it/, `${what}: ${r.stderr}`);
      }
    },
  );

  it('standard input is bounded too; a big config file is refused before it is parsed', () => {
    const r = run(['inspect', '-'], Buffer.alloc(17 << 20, 0x41));
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /file \(standard input\) is larger than 16 MiB/);
    const big = path.join(tempDir('mtls-bounded-'), 'big.yaml');
    fs.writeFileSync(big, `listeners:\n${'  # padding\n'.repeat(200_000)}`);
    const c = run(['proxy', '--config', big, '--check']);
    assert.notEqual(c.status, 0);
    assert.match(c.stderr, /config .*big\.yaml is larger than 1 MiB/);
  });
});

describe('fileRange (the published CRLs, read in pieces at each revocation)', () => {
  // Each piece is valid until the next is asked for: copied as it comes.
  const whole = (r: ReturnType<typeof fileRange>) => Buffer.concat(Array.from(r.chunks(), (c) => Buffer.from(c)));
  it('gives exactly the octets of its range in pieces of any size, and stops at its end however the file grows', () => {
    const dir = tempDir('mtls-filerange-');
    const data = crypto.randomBytes(300_000);
    const file = path.join(dir, 'f');
    fs.writeFileSync(file, data);
    const fd = fs.openSync(file, 'r');
    try {
      for (const piece of [1, 7, 4096, 256 * 1024, 1 << 20]) {
        const r = fileRange(fd, 1000, 250_000, piece);
        const got = whole(r);
        assert.ok(got.equals(data.subarray(1000, 250_000)), `piece ${piece}`);
        assert.ok(r.read(5, 70).equals(data.subarray(1005, 1070)));
        assert.ok(r.range(100, 200).read(0, 100).equals(data.subarray(1100, 1200)));
      }
      assert.throws(() => fileRange(fd, 0, 10).read(5, 11), RangeError);
      assert.throws(() => fileRange(fd, 0, 10).range(-1, 3), RangeError);
      // The file grows while read: the range ends where it was told to.
      fs.appendFileSync(file, Buffer.alloc(1 << 20));
      assert.equal(whole(fileRange(fd, 0, data.length)).length, data.length);
      // The file shrinks under it: an error, not short data taken as whole.
      fs.truncateSync(file, 1000);
      assert.throws(() => whole(fileRange(fd, 0, data.length)), /became shorter/);
    } finally {
      fs.closeSync(fd);
    }
  });
});
