/**
 * Name constraints where RFC 5280 4.2.1.10 allows them (issue 13): only in a CA certificate, critical, not empty.
 * Ours is checked against both independent verifiers here: `openssl verify -x509_strict` accepts all three cases
 * (so the strict profile is stricter, docs/verify.md says why), pyca/cryptography's verifier refuses two of them.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { it } from 'node:test';
import { nameConstraintsExt } from '../../src/pki/extensions.js';
import { OID } from '../../src/pki/oid.js';
import { verifyChain } from '../../src/pki/verify.js';
import { makeCert, openssl, tempDir, writePem, type TestCert } from '../helpers/pki.js';

const PYCA = `
import sys, datetime
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
load = lambda p: x509.load_pem_x509_certificates(open(p, 'rb').read())
store = Store(load(sys.argv[1]))
v = PolicyBuilder().store(store).time(datetime.datetime.now(datetime.timezone.utc)).build_server_verifier(x509.DNSName('a.example.org'))
try:
    v.verify(load(sys.argv[2])[0], load(sys.argv[3]))
    print('OK')
except Exception as e:
    print('REJECT', e)
`;

function pyca(dir: string, root: TestCert, leaf: TestCert, mid: TestCert): string {
  const r = spawnSync(
    'python3',
    ['-c', PYCA, writePem(dir, 'r.pem', [root]), writePem(dir, 'l.pem', [leaf]), writePem(dir, 'm.pem', [mid])],
    {
      encoding: 'utf8',
    },
  );
  return `${r.stdout}${r.stderr}`;
}
const hasPyca = spawnSync('python3', ['-c', 'from cryptography.x509.verification import PolicyBuilder']).status === 0;

it('nameConstraints outside a CA, non-critical, or empty: refused, with the verdicts of OpenSSL and pyca beside ours', () => {
  const root = makeCert({ cn: 'NC Root', ca: true });
  const plain = makeCert({ cn: 'NC Plain Int', ca: true, issuer: root });
  const cases: { name: string; mid: TestCert; leaf: (mid: TestCert) => TestCert; pyca: 'OK' | 'REJECT' }[] = [
    {
      name: 'in an end-entity certificate',
      mid: plain,
      leaf: (mid) =>
        makeCert({
          cn: 'nc-leaf',
          issuer: mid,
          dns: ['a.example.org'],
          eku: [OID.serverAuth],
          nameConstraints: { permittedDns: ['example.org'] },
        }),
      pyca: 'REJECT',
    },
    {
      name: 'not critical in a CA',
      mid: makeCert({
        cn: 'NC Soft Int',
        ca: true,
        issuer: root,
        extra: [{ ...nameConstraintsExt({ permittedDns: ['example.org'] }), critical: false }],
      }),
      leaf: (mid) => makeCert({ cn: 'under-soft-nc', issuer: mid, dns: ['a.example.org'], eku: [OID.serverAuth] }),
      pyca: 'OK',
    },
    {
      name: 'an empty sequence',
      mid: makeCert({
        cn: 'NC Empty Int',
        ca: true,
        issuer: root,
        extra: [{ oid: OID.nameConstraints, critical: true, value: Buffer.from([0x30, 0x00]) }],
      }),
      leaf: (mid) => makeCert({ cn: 'under-empty-nc', issuer: mid, dns: ['a.example.org'], eku: [OID.serverAuth] }),
      pyca: 'REJECT',
    },
  ];
  for (const c of cases) {
    const leaf = c.leaf(c.mid);
    const ours = verifyChain(leaf.cert, {
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
    const dir = tempDir();
    const theirs = openssl(
      [
        'verify',
        '-x509_strict',
        '-CAfile',
        writePem(dir, 'ca.pem', [root]),
        '-untrusted',
        writePem(dir, 'u.pem', [c.mid]),
      ].concat(['-purpose', 'sslserver', writePem(dir, 'leaf.pem', [leaf])]),
    );
    assert.equal(
      theirs.status,
      0,
      `OpenSSL -x509_strict accepts ${c.name} (the strict profile is stricter): ${theirs.stdout}${theirs.stderr}`,
    );
    if (hasPyca) assert.ok(pyca(dir, root, leaf, c.mid).startsWith(c.pyca), `pyca/cryptography on ${c.name}`);
  }
  // The same chain without the defect passes all three.
  const ok = makeCert({ cn: 'nc-ok', issuer: plain, dns: ['a.example.org'], eku: [OID.serverAuth] });
  assert.equal(
    verifyChain(ok.cert, {
      trustAnchors: [root.cert],
      intermediates: [plain.cert],
      at: new Date(),
      purpose: 'server',
      dns: 'a.example.org',
    }).valid,
    true,
  );
  if (hasPyca) assert.ok(pyca(tempDir(), root, ok, plain).startsWith('OK'));
});
