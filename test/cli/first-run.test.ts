import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { BIN, ROOT, tempDir } from '../helpers/pki.js';

const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 30_000,
    env: { ...process.env, ...env },
  });

describe("a newcomer's first hour (issue 16)", () => {
  it('mtls verify defaults --ca to the CA home, as every other command does', () => {
    const home = path.join(tempDir('mtls-first-'), 'ca');
    const out = path.dirname(home);
    assert.equal(run(['ca', 'init', '--name', 'First'], { MTLS_HOME: home }).status, 0);
    assert.equal(run(['issue', 'client', 'me', '--out', out], { MTLS_HOME: home }).status, 0);
    const r = run(['verify', path.join(out, 'me.crt'), '--purpose', 'client'], { MTLS_HOME: home });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /me\.crt: OK/);
  });

  it('mtls issue without a kind is a usage error (exit 2), not a silent success', () => {
    const r = run(['issue']);
    assert.equal(r.status, 2);
    assert.match(r.stderr, /say what to issue: 'mtls issue server NAME/);
  });

  it('the LICENSE that package.json names is there', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { license: string };
    assert.equal(pkg.license, 'Apache-2.0');
    assert.match(fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8'), /Apache License\s+Version 2\.0, January 2004/);
  });
});
