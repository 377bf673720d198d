/**
 * Name constraints where RFC 5280 4.2.1.10 allows them (issue 13): only in a CA certificate, critical, not empty.
 * Ours is checked against both independent verifiers here: `openssl verify -x509_strict` accepts all three cases
 * (so the strict profile is stricter, docs/verify.md says why), pyca/cryptography's verifier refuses two of them.
 */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { nameConstraintsExt } from '../../src/pki/extensions.js';
import { OID } from '../../src/pki/oid.js';
import { verifyChain } from '../../src/pki/verify.js';
import { makeCert, type TestCert } from '../helpers/pki.js';
import { hasPyca, opensslVerdict, pycaVerdicts, type VerifierCase } from '../helpers/verifiers.js';

it('nameConstraints outside a CA, non-critical, or empty: refused, with the verdicts of OpenSSL and pyca beside ours', () => {
  const root = makeCert({ cn: 'NC Root', ca: true });
  const plain = makeCert({ cn: 'NC Plain Int', ca: true, issuer: root });
  const leafUnder = (mid: TestCert, cn: string) =>
    makeCert({ cn, issuer: mid, dns: ['a.example.org'], eku: [OID.serverAuth] });
  const cases: { name: string; mid: TestCert; leaf: TestCert; pyca: boolean }[] = [
    {
      name: 'in an end-entity certificate',
      mid: plain,
      leaf: makeCert({
        cn: 'nc-leaf',
        issuer: plain,
        dns: ['a.example.org'],
        eku: [OID.serverAuth],
        nameConstraints: { permittedDns: ['example.org'] },
      }),
      pyca: false,
    },
    ...[
      {
        name: 'not critical in a CA',
        mid: makeCert({
          cn: 'NC Soft Int',
          ca: true,
          issuer: root,
          extra: [{ ...nameConstraintsExt({ permittedDns: ['example.org'] }), critical: false }],
        }),
        pyca: true,
      },
      {
        name: 'an empty sequence',
        mid: makeCert({
          cn: 'NC Empty Int',
          ca: true,
          issuer: root,
          extra: [{ oid: OID.nameConstraints, critical: true, value: Buffer.from([0x30, 0x00]) }],
        }),
        pyca: false,
      },
    ].map((c) => ({ ...c, leaf: leafUnder(c.mid, `under-${c.name}`) })),
  ];
  const asCase = (leaf: TestCert, mid: TestCert): VerifierCase => ({
    leaf,
    anchors: [root],
    untrusted: [mid],
    purpose: 'server',
    dns: 'a.example.org',
    at: new Date(),
  });
  const ok = makeCert({ cn: 'nc-ok', issuer: plain, dns: ['a.example.org'], eku: [OID.serverAuth] });
  const pyca = hasPyca ? pycaVerdicts([...cases.map((c) => asCase(c.leaf, c.mid)), asCase(ok, plain)]) : [];
  for (const [i, c] of cases.entries()) {
    const ours = verifyChain(c.leaf.cert, {
      trustAnchors: [root.cert],
      intermediates: [c.mid.cert],
      at: new Date(),
      purpose: 'server',
      dns: 'a.example.org',
    });
    assert.equal(ours.valid, false, c.name);
    assert.ok(
      ours.problems.some(
        (p) => (p.code === 'BASIC_CONSTRAINTS' || p.code === 'MALFORMED') && /nameConstraints/.test(p.message),
      ),
      JSON.stringify(ours.problems),
    );
    const theirs = opensslVerdict(asCase(c.leaf, c.mid), true);
    assert.ok(theirs.ok, `OpenSSL -x509_strict accepts ${c.name} (the strict profile is stricter): ${theirs.text}`);
    if (hasPyca) assert.equal(pyca[i]!.ok, c.pyca, `pyca/cryptography on ${c.name}: ${pyca[i]!.text}`);
  }
  // The same chain without the defect passes all three.
  const r = verifyChain(ok.cert, {
    trustAnchors: [root.cert],
    intermediates: [plain.cert],
    at: new Date(),
    purpose: 'server',
    dns: 'a.example.org',
  });
  assert.equal(r.valid, true);
  assert.ok(opensslVerdict(asCase(ok, plain), true).ok);
  if (hasPyca) assert.ok(pyca.at(-1)!.ok);
});
