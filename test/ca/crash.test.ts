import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { SqliteStore } from '../../src/store/sqlite.js';
import { BIN, ROOT, tempDir } from '../helpers/pki.js';

/** `mtls ...`, optionally killed (SIGKILL) at a named point of its write (src/util/fs.ts crashPoint). */
function run(args: string[], crashAt?: string) {
  const env = { ...process.env, ...(crashAt ? { MTLS_CRASH_AT: crashAt } : {}) };
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', env, timeout: 30_000 });
  return { status: r.status, signal: r.signal, stderr: r.stderr };
}

async function inventorySerials(home: string): Promise<Set<string>> {
  const store = new SqliteStore(path.join(home, 'inventory.db'));
  const all = await store.list();
  await store.close();
  return new Set(all.map((r) => r.serial));
}

const serialOf = (file: string) =>
  new crypto.X509Certificate(fs.readFileSync(file)).serialNumber.toLowerCase().replace(/^0+/, '');
const norm = (hex: string) => hex.replace(/^0+/, '');

/** The certificate and key files in `out` belong together. */
function pairMatches(out: string, name: string): boolean {
  const cert = new crypto.X509Certificate(fs.readFileSync(path.join(out, `${name}.crt`)));
  const key = crypto.createPublicKey(crypto.createPrivateKey(fs.readFileSync(path.join(out, `${name}.key`))));
  return cert.publicKey.export({ format: 'der', type: 'spki' }).equals(key.export({ format: 'der', type: 'spki' }));
}

/** Ages every temporary file in `dir` past the stale limit, as if the crash had been a while ago. */
function age(dir: string): void {
  const old = new Date(Date.now() - 3600e3);
  for (const n of fs.readdirSync(dir)) if (n.startsWith('.')) fs.utimesSync(path.join(dir, n), old, old);
}

describe('a CA killed at any step of an issuance (issue 12.4)', () => {
  for (const point of ['after-record', 'after-stage', 'between-renames']) {
    it(
      `killed ${point} while replacing svc (--force): every certificate on disk ` +
        `is in the inventory; the next write completes the pair and cleans up`,
      async () => {
        const dir = tempDir('mtls-crash-');
        const home = path.join(dir, 'ca');
        const out = path.join(dir, 'out');
        assert.equal(run(['ca', 'init', '--home', home, '--name', 'Crash']).status, 0);
        assert.equal(run(['issue', 'client', 'svc', '--home', home, '--out', out]).status, 0);
        const before = serialOf(path.join(out, 'svc.crt'));
        const crashed = run(['issue', 'client', 'svc', '--home', home, '--out', out, '--force'], point);
        assert.equal(crashed.signal, 'SIGKILL', `the process was killed at ${point}: ${crashed.stderr}`);
        const known = await inventorySerials(home);
        assert.equal(known.size, 2, 'the new certificate was recorded before anything was written');
        const onDisk = serialOf(path.join(out, 'svc.crt'));
        assert.ok([...known].map(norm).includes(onDisk), `the certificate on disk (${onDisk}) is in the inventory`);
        if (point !== 'between-renames') assert.equal(onDisk, before, 'nothing was replaced yet');
        age(out);
        assert.equal(
          run(['issue', 'client', 'other', '--home', home, '--out', out]).status,
          0,
          'the next issuance into the directory',
        );
        assert.ok(pairMatches(out, 'svc'), 'svc.crt and svc.key belong together');
        assert.deepEqual(
          fs.readdirSync(out).filter((n) => n.startsWith('.')),
          [],
          'no temporary file or journal is left',
        );
        if (point === 'between-renames')
          assert.notEqual(serialOf(path.join(out, 'svc.crt')), before, 'the interrupted replacement was completed');
      },
    );
  }

  it('a write that fails cleanly leaves the inventory as it was', async () => {
    const dir = tempDir('mtls-crash-');
    const home = path.join(dir, 'ca');
    assert.equal(run(['ca', 'init', '--home', home, '--name', 'Crash']).status, 0);
    const out = path.join(dir, 'out');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'svc.crt'), "someone else's file");
    const r = run(['issue', 'client', 'svc', '--home', home, '--out', out]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /svc\.crt already exists/);
    assert.equal((await inventorySerials(home)).size, 0);
  });

  it('ca init interrupted (SIGINT) after its keys were staged removes its staging directory', () => {
    const dir = tempDir('mtls-crash-');
    const r = run(['ca', 'init', '--home', path.join(dir, 'ca'), '--name', 'Crash'], 'init-staged:SIGINT');
    assert.equal(r.signal, 'SIGINT', r.stderr);
    assert.deepEqual(fs.readdirSync(dir), [], 'no staging directory with keys, no half CA');
  });

  it('ca init killed while staging leaves key material that the next init removes', () => {
    const dir = tempDir('mtls-crash-');
    const staging = path.join(dir, '.ca.init-abc123');
    fs.mkdirSync(staging, { mode: 0o700 });
    fs.writeFileSync(path.join(staging, 'root.key'), 'key material', { mode: 0o600 });
    age(dir);
    assert.equal(run(['ca', 'init', '--home', path.join(dir, 'ca'), '--name', 'Crash']).status, 0);
    assert.equal(fs.existsSync(staging), false);
  });
});
