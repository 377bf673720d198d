import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { OID } from '../../src/pki/oid.js';
import { encodePem } from '../../src/pki/pem.js';
import { PATH_BUDGET, verifyChain } from '../../src/pki/verify.js';
import { BIN, latticeChain, makeCert, tempDir } from '../helpers/pki.js';

const lattice = (width: number, levels: number) => latticeChain(width, levels);

describe('path building has a budget (issue 12.3)', () => {
  it('8 CAs per level, 7 levels, no anchor: verifyChain stops at the budget and says why', () => {
    const { leaf, intermediates } = lattice(8, 7);
    const anchor = makeCert({ cn: 'Unrelated Root', ca: true }).cert;
    const r = verifyChain(leaf, { trustAnchors: [anchor], intermediates, at: new Date() });
    assert.equal(r.valid, false);
    const budget = r.problems.find((p) => p.code === 'PATH_BUDGET');
    assert.ok(budget, JSON.stringify(r.problems.map((p) => p.code)));
    assert.match(
      budget.message,
      new RegExp(`stopped after (${PATH_BUDGET.signatureChecks} signature checks|${PATH_BUDGET.steps} steps)`),
    );
  });

  it('a valid chain among decoys is still found; more than 64 intermediates are refused', () => {
    const root = makeCert({ cn: 'Root', ca: true });
    const inter = makeCert({ cn: 'Issuing', ca: true, issuer: root });
    const leaf = makeCert({ cn: 'svc', issuer: inter, eku: [OID.clientAuth] });
    const { intermediates } = lattice(4, 3);
    const ok = verifyChain(leaf.cert, {
      trustAnchors: [root.cert],
      intermediates: [...intermediates, inter.cert],
      at: new Date(),
      purpose: 'client',
    });
    assert.equal(ok.valid, true, JSON.stringify(ok.problems));
    const many = [...lattice(10, 7).intermediates, inter.cert];
    const r = verifyChain(leaf.cert, { trustAnchors: [root.cert], intermediates: many, at: new Date() });
    assert.equal(r.valid, false, 'the issuer sent after 64 others is not looked at');
    assert.ok(
      r.problems.some((p) => p.code === 'PATH_BUDGET' && /71 intermediates were offered/.test(p.message)),
      JSON.stringify(r.problems),
    );
  });

  it('mtls verify on that chain answers at once (it ran for minutes)', async () => {
    const { leaf, intermediates } = lattice(8, 7);
    const dir = tempDir('mtls-lattice-');
    fs.writeFileSync(path.join(dir, 'leaf.pem'), encodePem('CERTIFICATE', leaf.der));
    fs.writeFileSync(path.join(dir, 'chain.pem'), intermediates.map((c) => encodePem('CERTIFICATE', c.der)).join(''));
    fs.writeFileSync(path.join(dir, 'ca.pem'), makeCert({ cn: 'Unrelated Root', ca: true }).pem);
    const out = await new Promise<{ code: number | null; text: string }>((resolve) => {
      const c = spawn(process.execPath, [
        BIN,
        'verify',
        path.join(dir, 'leaf.pem'),
        '--untrusted',
        path.join(dir, 'chain.pem'),
        '--ca',
        path.join(dir, 'ca.pem'),
      ]);
      let text = '';
      c.stdout.on('data', (d) => (text += d));
      c.stderr.on('data', (d) => (text += d));
      const kill = setTimeout(() => c.kill('SIGKILL'), 30_000);
      c.on('exit', (code) => {
        clearTimeout(kill);
        resolve({ code, text });
      });
    });
    assert.equal(out.code, 1, out.text);
    assert.match(out.text, /too many candidate issuers/);
  });
});
