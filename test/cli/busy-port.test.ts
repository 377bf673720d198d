import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { close, freePort, listen, testPki, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { BIN, ROOT } from '../helpers/pki.js';

let pki: TestPki;
let busy: net.Server;
let port: number;
before(async () => {
  pki = await testPki();
  busy = net.createServer();
  port = await listen(busy);
});
after(async () => {
  await close(busy);
  await pki.ca.close();
});

/** Processes whose command line holds `needle` (left-over workers of a failed start). */
function processesWith(needle: string): number[] {
  return fs
    .readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle);
      } catch {
        return false;
      }
    })
    .map(Number);
}

describe('a port that is taken ends the command (issue 12.6)', () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });

  it('mtls serve --cert --key: one line, exit non-zero (it printed EADDRINUSE, then hung)', () => {
    const r = run(['serve', '--port', String(port), ...credentialArgs(pki)]);
    assert.equal(r.error, undefined, 'it exited by itself');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /serve cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);
  });

  it('mtls proxy server --workers 2: the primary and both workers exit, non-zero, with the reason', async () => {
    const admin = await freePort();
    const listenArg = `127.0.0.1:${port}`;
    const r = run([
      'proxy',
      'server',
      '--listen',
      listenArg,
      '--target',
      '127.0.0.1:1',
      ...credentialArgs(pki),
      '--allow',
      'any',
      '--workers',
      '2',
      '--admin',
      `127.0.0.1:${admin}`,
    ]);
    assert.equal(r.error, undefined, 'it exited by itself');
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);
    await new Promise((res) => setTimeout(res, 300));
    assert.deepEqual(processesWith(`--listen\0${listenArg}`), [], 'no worker is left');
  });
});
