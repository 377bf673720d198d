/**
 * OCSP for the root's certificates (issue 14: "each issuer it serves"): the intermediate's status, signed by a
 * responder certificate the root issued. The root key is often kept offline, so the responder must keep working
 * from the responder certificate it made while the key was at hand, and say `unauthorized` (never a made-up
 * answer) when it has none.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { OcspResponder, type OcspCa } from '../../src/ca/ocsp-responder.js';
import { checkOcspResponse, ocspRequest } from '../../src/pki/ocsp-check.js';
import { serveOcsp } from '../../src/ca/ocsp-server.js';
import { readCertificates } from '../../src/pki/certificate.js';
import { chainRevocation } from '../../src/tls/chain-revocation.js';
import { freePort } from '../helpers/endpoints.js';
import { tempDir } from '../helpers/pki.js';

const UNAUTHORIZED = [0x30, 0x03, 0x0a, 0x01, 0x06];
const DAY = 24 * 3600e3;

describe("OCSP for the root's certificates", () => {
  let ca: CertificateAuthority;
  /** The CA as the responder sees it, with the root key at hand or not. */
  const view = (rootKey: boolean): OcspCa => ({
    home: ca.home,
    root: ca.root,
    intermediate: ca.intermediate,
    store: ca.store,
    signingKey: () => ca.signingKey(),
    rootSigningKey: () => (rootKey ? ca.rootSigningKey() : undefined),
  });
  const ask = () => ocspRequest(ca.intermediate, ca.root, { nonce: false }).der;

  before(async () => {
    ca = await CertificateAuthority.init({ home: path.join(tempDir('mtls-ocsp-root-'), 'ca'), name: 'Rooted' });
  });
  after(() => ca.close());

  it('root key offline and no responder certificate of the root yet: unauthorized', async () => {
    const der = await new OcspResponder(view(false)).answer(ask());
    assert.deepEqual([...der], UNAUTHORIZED);
    assert.equal(fs.existsSync(path.join(ca.home, 'ocsp', 'root-responder.crt')), false);
  });

  it('made while the root key was at hand, it answers once the key is offline, until it expires', async () => {
    const online = await new OcspResponder(view(true)).answer(ask());
    const good = checkOcspResponse(online, ca.intermediate, ca.root);
    assert.equal(good.status, 'good');
    assert.match(good.signedBy, /OCSP responder \(root\)/);
    assert.equal((fs.statSync(path.join(ca.home, 'ocsp', 'root-responder.key')).mode & 0o777).toString(8), '600');

    const offline = new OcspResponder(view(false));
    assert.equal(checkOcspResponse(await offline.answer(ask()), ca.intermediate, ca.root).status, 'good');
    // 31 days on, the 30-day responder certificate has expired and the root key is still away.
    const later = new Date(Date.now() + 31 * DAY);
    assert.deepEqual([...(await new OcspResponder(view(false)).answer(ask(), later))], UNAUTHORIZED);
  });

  it('connect and trace ask the responder the intermediate names when it names no CRL', async () => {
    const port = await freePort();
    const home = path.join(tempDir('mtls-ocsp-root-url-'), 'ca');
    const named = await CertificateAuthority.init({ home, name: 'Named', url: `http://127.0.0.1:${port}` });
    const server = await serveOcsp(new OcspResponder(named), home, { host: '127.0.0.1', port }, () => {}, {
      engine: 'node',
    });
    try {
      assert.deepEqual(named.intermediate.ocspUrls, [`http://127.0.0.1:${port}/ocsp`]);
      const leaf = await named.issue({ profile: 'server', name: 'web', names: { dns: ['web.example'] } });
      const chain = readCertificates(Buffer.from(leaf.chainPem), 'chain');
      // As the intermediate of a CA that publishes no CRL: only its responder can say.
      const withoutCrl = [chain[0]!, { ...chain[1]!, crlUrls: [] }];
      const seen = await chainRevocation(withoutCrl, [named.root]);
      assert.equal(seen.length, 2);
      assert.equal(seen[1]!.status, 'good');
      assert.match(
        seen[1]!.source,
        /the OCSP responder http:\/\/127\.0\.0\.1:\d+\/ocsp \(signed by .*OCSP responder \(root\)/,
      );
      // With its CRL, the CRL is asked (one a year at the root, not one question per certificate).
      const withCrl = await chainRevocation(chain, [named.root]);
      assert.match(withCrl[1]!.source, /^the CRL at /);
    } finally {
      await server.close();
      await named.close();
    }
  });

  it('a serial the root never issued is unknown', async () => {
    const stranger = { ...ca.intermediate, serial: Buffer.from('0badc0de', 'hex'), serialHex: '0badc0de' };
    const der = await new OcspResponder(view(true)).answer(ocspRequest(stranger, ca.root, { nonce: false }).der);
    const status = checkOcspResponse(der, stranger, ca.root);
    assert.equal(status.status, 'unknown');
  });
});
