/**
 * `mtls ca install` / `uninstall` (issue 16) on this machine's real stores: curl without --cacert trusts our server
 * afterwards, the NSS database (certutil) holds the root, and uninstall gives back the system bundle byte for byte.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { freePort } from '../helpers/endpoints.js';
import { BIN, mtls, tempDir } from '../helpers/pki.js';
import { peerMissing, serveArgs, startProcess, stopAll } from '../helpers/process.js';

const SYSTEM_BUNDLE = '/etc/ssl/certs/ca-certificates.crt';
const notRoot =
  process.getuid?.() !== 0 && 'the system trust store needs root (run the suite as root, as .ci/run does)';
const skip = notRoot || peerMissing('update-ca-certificates') || peerMissing('certutil') || peerMissing('curl');

describe('mtls ca install / uninstall', { skip }, () => {
  let home: string;
  let env: NodeJS.ProcessEnv;
  let nssDb: string;
  let original: Buffer;
  let port: number;
  const dir = tempDir('mtls-install-');

  before(async () => {
    home = path.join(dir, 'ca');
    env = { MTLS_HOME: home };
    original = fs.readFileSync(SYSTEM_BUNDLE);
    assert.equal(mtls(['ca', 'init', '--name', `Install Test ${process.pid}`], { env }).status, 0);
    assert.equal(mtls(['issue', 'server', 'web', '--dns', 'localhost', '--out', dir], { env }).status, 0);
    assert.equal(mtls(['issue', 'client', 'me', '--out', dir], { env }).status, 0);
    nssDb = path.join(dir, 'nssdb');
    fs.mkdirSync(nssDb);
    assert.equal(spawnSync('certutil', ['-N', '-d', `sql:${nssDb}`, '--empty-password']).status, 0);
    port = await freePort();
    const args = [...serveArgs(port, { cert: path.join(dir, 'web.crt'), key: path.join(dir, 'web.key') }), '--http'];
    await startProcess(process.execPath, [BIN, ...args, '--allow', 'any'], /listening on/, env);
  });
  after(() => {
    stopAll();
    mtls(['ca', 'uninstall', '--nss-db', nssDb], { env }); // whatever happened above, the machine gets its store back
  });

  const curl = () =>
    spawnSync(
      'curl',
      ['-sS', '--cert', path.join(dir, 'me.crt'), '--key', path.join(dir, 'me.key'), `https://localhost:${port}/`],
      {
        encoding: 'utf8',
        timeout: 20_000,
      },
    );
  const inNss = () =>
    /mtlskit Install Test/.test(spawnSync('certutil', ['-L', '-d', `sql:${nssDb}`], { encoding: 'utf8' }).stdout);

  it('install: curl trusts the server without --cacert, NSS has the root, the Node line is printed; twice is a no-op', () => {
    assert.notEqual(curl().status, 0, 'not trusted before install');
    const r = mtls(['ca', 'install', '--nss-db', nssDb], { env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /system trust store: installed \(\/usr\/local\/share\/ca-certificates\/mtlskit-[0-9a-f]{16}\.crt\)/,
    );
    assert.match(r.stdout, new RegExp(`export NODE_EXTRA_CA_CERTS=${home}/ca.crt`));
    const ok = curl();
    assert.equal(ok.status, 0, ok.stderr);
    assert.match(ok.stdout, /"identity"/);
    assert.ok(inNss(), 'the NSS database holds the root');
    assert.match(mtls(['ca', 'install', '--nss-db', nssDb], { env }).stdout, /system trust store: already installed/);
  });

  it('uninstall: curl no longer trusts it, NSS no longer holds it, the system bundle is as it was', () => {
    const r = mtls(['ca', 'uninstall', '--nss-db', nssDb], { env });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /system trust store: removed/);
    assert.notEqual(curl().status, 0);
    assert.ok(!inNss());
    assert.deepEqual(fs.readFileSync(SYSTEM_BUNDLE), original);
    assert.match(mtls(['ca', 'uninstall', '--nss-db', nssDb], { env }).stdout, /system trust store: not installed/);
  });
});

it('ca install without a CA home says how to make one', () => {
  const r = mtls(['ca', 'install', '--no-system', '--no-nss'], { env: { MTLS_HOME: path.join(tempDir(), 'none') } });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no CA at .*; create one with 'mtls ca init'/);
});
