/**
 * The CA's processes keep the CRLs fresh (issue 14): a CRL past its nextUpdate makes every hard-fail server refuse
 * every client, so `mtls ca ocsp` and `mtls ca serve` publish at once when none is published (or the published one
 * does not parse), and again at half the published one's lifetime, with the same lifetime.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { keepCrlsFresh } from '../../src/ca/crl-freshness.js';
import { crlPaths } from '../../src/ca/revocation.js';
import { crlValidity, encodeCrl } from '../../src/pki/crl-writer.js';
import { generateKeyPair } from '../../src/pki/keys.js';
import { freePort, until } from '../helpers/endpoints.js';
import { BIN, mtls, openssl, tempDir } from '../helpers/pki.js';
import { startProcess, trackServers } from '../helpers/process.js';

trackServers();

/** The validity of the published intermediate CRL, or undefined when there is none. */
function published(home: string) {
  const file = crlPaths(home).intermediate;
  if (!fs.existsSync(file)) return undefined;
  const v = crlValidity(fs.readFileSync(file));
  return { thisUpdate: v.thisUpdate.getTime(), nextUpdate: v.nextUpdate!.getTime() };
}

/** What `openssl crl` says of the published intermediate CRL, its signature checked with the intermediate. */
function opensslOnCrl(home: string): string {
  const file = crlPaths(home).intermediate;
  const r = openssl(['crl', '-in', file, '-inform', 'DER', '-CAfile', path.join(home, 'intermediate.crt'), '-noout']);
  return r.stderr + r.stdout;
}

describe('keeping the CRLs fresh', () => {
  it('publishes when none is, at half the lifetime (the same lifetime), and over a CRL that does not parse or is forged', async () => {
    const home = path.join(tempDir('mtls-fresh-'), 'ca');
    const ca = await CertificateAuthority.init({ home, name: 'Fresh' });
    fs.rmSync(crlPaths(home).dir, { recursive: true }); // as in a home from before ca init published CRLs
    const published0: string[] = [];
    const errors: string[] = [];
    let stop = keepCrlsFresh(ca, { onPublish: (m) => published0.push(m), onError: (m) => errors.push(m) });
    await until(() => published(home) !== undefined, 5000, 'a first CRL');
    await stop();
    assert.match(published0[0]!, /none was published/);
    const first = published(home)!;
    assert.equal(first.nextUpdate - first.thisUpdate, 86400e3, 'the default lifetime: 24 h');

    // A CRL of 4 s (as `mtls ca crl --next-update` would give one of a day): renewed after 2 s, for 4 s again.
    await ca.publishCrl({ lifetimeMs: 4000 });
    const short = published(home)!;
    stop = keepCrlsFresh(ca, { onError: (m) => errors.push(m) });
    await until(() => published(home)!.thisUpdate > short.thisUpdate, 6000, 'a renewal at half the lifetime');
    const renewed = published(home)!;
    assert.ok(renewed.thisUpdate - short.thisUpdate >= 1000, 'not renewed before half its lifetime had passed');
    assert.equal(renewed.nextUpdate - renewed.thisUpdate, 4000, 'the same lifetime');
    await until(() => published(home)!.thisUpdate > renewed.thisUpdate, 6000, 'renewed again');
    assert.match(opensslOnCrl(home), /verify OK/, 'openssl verifies the renewed CRL');

    // Someone wrote garbage over it: a CRL again, of the default lifetime.
    fs.writeFileSync(crlPaths(home).intermediate, 'not a CRL');
    const parses = () => {
      try {
        return published(home) !== undefined;
      } catch {
        return false;
      }
    };
    await until(parses, 6000, 'a CRL over the garbage');
    const fresh = published(home)!;
    assert.equal(fresh.nextUpdate - fresh.thisUpdate, 86400e3);

    // A CRL in the intermediate's name that another key signed, asking for 1.5 s CRLs: replaced, not copied.
    const forged = encodeCrl(
      {
        issuerDer: ca.intermediate.subjectDer,
        issuerKeyId: ca.intermediate.subjectKeyId!,
        thisUpdate: new Date(Date.now() - 5000),
        nextUpdate: new Date(Date.now() - 3500),
        number: 1000n,
        entries: [],
      },
      generateKeyPair().privateKey,
    );
    await stop(); // a keeper that last saw a 24 h CRL looks again in a minute: a new one looks at once
    fs.writeFileSync(crlPaths(home).intermediate, forged);
    stop = keepCrlsFresh(ca, { onError: (m) => errors.push(m) });
    await until(() => published(home)!.nextUpdate - published(home)!.thisUpdate === 86400e3, 6000, 'a CRL of ours');
    await stop();
    assert.match(opensslOnCrl(home), /verify OK/);
    assert.deepEqual(errors, []);
    await ca.close();
  });

  it('says a failure once per cause, keeps trying, and stops', async () => {
    const home = path.join(tempDir('mtls-fresh-fail-'), 'ca');
    const ca = await CertificateAuthority.init({ home, name: 'FreshFail' });
    await ca.publishCrl({ lifetimeMs: 2000 }); // looked at every 250 ms, due after 1 s
    const errors: string[] = [];
    let calls = 0;
    const stop = keepCrlsFresh(
      {
        home,
        intermediate: ca.intermediate,
        publishCrl: async () => {
          if (++calls <= 3) throw new Error('no space left on device');
          return '';
        },
      },
      { onError: (m) => errors.push(m) },
    );
    await until(() => calls >= 5, 8000, 'tries after the failures');
    await stop();
    const after = calls;
    assert.deepEqual(errors, ['cannot keep the CRLs fresh: no space left on device'], 'once, not at each try');
    await new Promise((r) => setTimeout(r, 600));
    assert.equal(calls, after, 'stopped');
    await ca.close();
  });

  it('mtls ca ocsp publishes the CRLs it serves when there are none yet', async () => {
    const dir = tempDir('mtls-fresh-cli-');
    const env = { MTLS_HOME: path.join(dir, 'ca') };
    assert.equal(mtls(['ca', 'init', '--name', 'FreshCli'], { env }).status, 0);
    fs.rmSync(crlPaths(env.MTLS_HOME).dir, { recursive: true }); // as in a home from before ca init published CRLs
    const port = await freePort();
    const p = await startProcess(
      process.execPath,
      [BIN, 'ca', 'ocsp', '--listen', `127.0.0.1:${port}`],
      /published fresh CRLs \(none was published\)/,
      env,
    );
    const crl = await fetch(`http://127.0.0.1:${port}/crl/intermediate.crl`);
    assert.equal(crl.status, 200, p.output());
    const body = Buffer.from(await crl.arrayBuffer());
    assert.ok(crlValidity(body).nextUpdate!.getTime() > Date.now());
    p.child.kill();
  });
});
