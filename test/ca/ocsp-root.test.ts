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

  it('a serial the root never issued is unknown', async () => {
    const stranger = { ...ca.intermediate, serial: Buffer.from('0badc0de', 'hex'), serialHex: '0badc0de' };
    const der = await new OcspResponder(view(true)).answer(ocspRequest(stranger, ca.root, { nonce: false }).der);
    const status = checkOcspResponse(der, stranger, ca.root);
    assert.equal(status.status, 'unknown');
  });
});
