import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ReadBuffer } from '../../src/io/files.js';
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

describe('ReadBuffer (the published CRLs, read again at each revocation)', () => {
  it('returns exactly the octets of each file, growing as needed, and refuses past its limit (/dev/zero too)', () => {
    const dir = tempDir('mtls-readbuffer-');
    const big = crypto.randomBytes(300_000);
    const small = crypto.randomBytes(1_000);
    fs.writeFileSync(path.join(dir, 'big'), big);
    fs.writeFileSync(path.join(dir, 'small'), small);
    const rb = new ReadBuffer();
    assert.ok(rb.read(path.join(dir, 'small'), 1 << 20).equals(small));
    assert.ok(rb.read(path.join(dir, 'big'), 1 << 20).equals(big));
    // A smaller file after a bigger one: its own octets, not the rest of the kept buffer.
    assert.ok(rb.read(path.join(dir, 'small'), 1 << 20).equals(small));
    assert.throws(() => rb.read(path.join(dir, 'big'), 100_000), /is larger than 100000 bytes/);
    // fstat says 0 octets; the reads never end: refused at the limit.
    assert.throws(() => rb.read('/dev/zero', 1 << 20), /is larger than 1 MiB/);
    assert.throws(() => rb.read(path.join(dir, 'missing'), 1 << 20), /ENOENT/);
  });
});
