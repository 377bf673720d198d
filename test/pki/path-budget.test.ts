import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parseCertificate, randomSerial, signCertificate, type Certificate } from '../../src/pki/certificate.js';
import { authorityKeyIdExt, basicConstraintsExt, keyIdentifier, keyUsageExt, subjectKeyIdExt } from '../../src/pki/extensions.js';
import { generateKeyPair } from '../../src/pki/keys.js';
import { buildName } from '../../src/pki/names.js';
import { OID } from '../../src/pki/oid.js';
import { encodePem } from '../../src/pki/pem.js';
import { PATH_BUDGET, verifyChain } from '../../src/pki/verify.js';
import { BIN, makeCert, tempDir } from '../helpers/pki.js';

/**
 * The chain of the hostile-peer report: `levels` levels of `width` CA certificates each, where every certificate of
 * a level has the same subject and key, and is signed by the (shared) key of the level above; the top level's
 * issuer is nowhere. Every certificate of a level verifies under every one of the level above: width^levels paths.
 */
function lattice(width: number, levels: number): { leaf: Certificate; intermediates: Certificate[] } {
  const keys = Array.from({ length: levels + 2 }, () => generateKeyPair('ec-p256'));
  const name = (l: number) => buildName([{ oid: OID.commonName, value: `Level ${l}` }]);
  const now = Date.now();
  const intermediates: Certificate[] = [];
  for (let l = 1; l <= levels; l++) {
    for (let i = 0; i < width; i++) {
      intermediates.push(parseCertificate(signCertificate({
        serial: randomSerial(), issuer: name(l + 1), subject: name(l), notBefore: new Date(now - 86400e3 - i * 1000), notAfter: new Date(now + 86400e3),
        publicKey: keys[l]!.publicKey,
        extensions: [basicConstraintsExt(true), keyUsageExt(['keyCertSign', 'cRLSign']), subjectKeyIdExt(keyIdentifier(keys[l]!.publicKey)), authorityKeyIdExt(keyIdentifier(keys[l + 1]!.publicKey))],
      }, keys[l + 1]!.privateKey)));
    }
  }
  const leaf = parseCertificate(signCertificate({
    serial: randomSerial(), issuer: name(1), subject: buildName([{ oid: OID.commonName, value: 'leaf' }]), notBefore: new Date(now - 86400e3), notAfter: new Date(now + 86400e3),
    publicKey: keys[0]!.publicKey, extensions: [basicConstraintsExt(false), keyUsageExt(['digitalSignature']), authorityKeyIdExt(keyIdentifier(keys[1]!.publicKey))],
  }, keys[1]!.privateKey));
  return { leaf, intermediates };
}

describe('path building has a budget (issue 12.3)', () => {
  it('8 CAs per level, 7 levels, no anchor: verifyChain stops at the budget and says why', () => {
    const { leaf, intermediates } = lattice(8, 7);
    const anchor = makeCert({ cn: 'Unrelated Root', ca: true }).cert;
    const r = verifyChain(leaf, { trustAnchors: [anchor], intermediates, at: new Date() });
    assert.equal(r.valid, false);
    const budget = r.problems.find((p) => p.code === 'PATH_BUDGET');
    assert.ok(budget, JSON.stringify(r.problems.map((p) => p.code)));
    assert.match(budget.message, new RegExp(`stopped after (${PATH_BUDGET.signatureChecks} signature checks|${PATH_BUDGET.steps} steps)`));
  });

  it('a valid chain among decoys is still found; more than 64 intermediates are refused', () => {
    const root = makeCert({ cn: 'Root', ca: true });
    const inter = makeCert({ cn: 'Issuing', ca: true, issuer: root });
    const leaf = makeCert({ cn: 'svc', issuer: inter, eku: [OID.clientAuth] });
    const { intermediates } = lattice(4, 3);
    const ok = verifyChain(leaf.cert, { trustAnchors: [root.cert], intermediates: [...intermediates, inter.cert], at: new Date(), purpose: 'client' });
    assert.equal(ok.valid, true, JSON.stringify(ok.problems));
    const many = [...lattice(10, 7).intermediates, inter.cert];
    const r = verifyChain(leaf.cert, { trustAnchors: [root.cert], intermediates: many, at: new Date() });
    assert.equal(r.valid, false, 'the issuer sent after 64 others is not looked at');
    assert.ok(r.problems.some((p) => p.code === 'PATH_BUDGET' && /71 intermediates were offered/.test(p.message)), JSON.stringify(r.problems));
  });

  it('mtls verify on that chain answers at once (it ran for minutes)', async () => {
    const { leaf, intermediates } = lattice(8, 7);
    const dir = tempDir('mtls-lattice-');
    fs.writeFileSync(path.join(dir, 'leaf.pem'), encodePem('CERTIFICATE', leaf.der));
    fs.writeFileSync(path.join(dir, 'chain.pem'), intermediates.map((c) => encodePem('CERTIFICATE', c.der)).join(''));
    fs.writeFileSync(path.join(dir, 'ca.pem'), makeCert({ cn: 'Unrelated Root', ca: true }).pem);
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const c = spawn(process.execPath, [BIN, 'verify', path.join(dir, 'leaf.pem'), '--untrusted', path.join(dir, 'chain.pem'), '--ca', path.join(dir, 'ca.pem')]);
      let text = '';
      c.stdout.on('data', (d) => (text += d));
      c.stderr.on('data', (d) => (text += d));
      const kill = setTimeout(() => c.kill('SIGKILL'), 30_000);
      c.on('exit', (code) => { clearTimeout(kill); resolve({ code, text }); });
    });
    assert.equal(out.code, 1, out.text);
    assert.match(out.text, /too many candidate issuers/);
  });
});
