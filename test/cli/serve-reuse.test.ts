/** `mtls serve` without --cert reuses its certificate instead of adding one to the inventory per run (issue 16). */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, it } from 'node:test';
import { freePort } from '../helpers/endpoints.js';
import { BIN, mtls, tempDir } from '../helpers/pki.js';
import { startProcess, stopAll } from '../helpers/process.js';

after(() => stopAll());

it('three runs of serve without --cert issue one certificate, kept in the CA home with its key 0600', async () => {
  const home = path.join(tempDir(), 'ca');
  const env = { MTLS_HOME: home };
  assert.equal(mtls(['ca', 'init', '--name', 'Serve Test'], { env }).status, 0);
  for (let i = 0; i < 3; i++) {
    const port = await freePort();
    const p = await startProcess(
      process.execPath,
      [BIN, 'serve', '--port', String(port), '--deny', 'any'],
      /listening on/,
      env,
    );
    p.child.kill('SIGTERM');
    await new Promise((r) => p.child.once('exit', r));
  }
  const list = JSON.parse(mtls(['ca', 'list', '--json'], { env }).stdout) as { subject: string }[];
  assert.equal(list.filter((c) => /mtls-serve/.test(c.subject)).length, 1, JSON.stringify(list));
  assert.equal(fs.statSync(path.join(home, 'serve', 'mtls-serve.key')).mode & 0o777, 0o600);
});
