/**
 * Path validation per second (issue 13): our verifyChain against `openssl verify` and pyca/cryptography's
 * verifier on the same chains (root -> intermediate -> P-256 server leaf, purpose server, host name checked),
 * each in-process where the peer allows: ours in a loop in this process, pyca in a loop in one Python process,
 * OpenSSL as one `openssl verify` process given every leaf (its start-up measured apart and taken out). Every
 * side parses the leaf from PEM/DER in the loop. Rounds are interleaved and medians reported.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CertificateAuthority } from '../src/ca/authority.js';
import { parseCertificate } from '../src/pki/certificate.js';
import { decodePem } from '../src/pki/pem.js';
import { verifyChain } from '../src/pki/verify.js';
import { fmt, median, opensslSpeed } from './lib.js';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const LEAVES = 300;
const host = (i: number) => `svc-${i}.example.org`;

/** `sent`: the intermediate arrives with the leaf (parsed, its key loaded, its signature checked every time). */
function oursRound(ca: CertificateAuthority, leaves: Buffer[], sent: boolean): number {
  const t0 = process.hrtime.bigint();
  leaves.forEach((der, i) => {
    const r = verifyChain(parseCertificate(der), {
      trustAnchors: [ca.root],
      intermediates: [sent ? parseCertificate(ca.intermediate.der) : ca.intermediate],
      at: new Date(),
      purpose: 'server',
      dns: host(i),
    });
    if (!r.valid) throw new Error(`bench chain refused: ${r.problems[0]?.message}`);
  });
  return leaves.length / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/** Seconds for one `openssl verify` process over `files`. */
function opensslSeconds(dir: string, files: string[]): number {
  const args = ['verify', '-CAfile', path.join(dir, 'root.crt'), '-untrusted', path.join(dir, 'int.crt')];
  const t0 = process.hrtime.bigint();
  const r = spawnSync('openssl', [...args, '-purpose', 'sslserver', ...files], { encoding: 'utf8' });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`openssl verify refused the bench chain: ${r.stdout}${r.stderr}`);
  return s;
}

/** Verifications per second inside one openssl process: (all leaves - one leaf) / (leaves - 1). */
function opensslRound(dir: string, files: string[]): { inProcess: number; perProcess: number } {
  const one = opensslSeconds(dir, files.slice(0, 1));
  const all = opensslSeconds(dir, files);
  return { inProcess: (files.length - 1) / Math.max(all - one, 1e-6), perProcess: 1 / one };
}

const PYCA = `
import sys, time, datetime
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
d = sys.argv[1]; n = int(sys.argv[2]); sent = sys.argv[3] == 'sent'
store = Store(x509.load_pem_x509_certificates(open(d + '/root.crt', 'rb').read()))
inter_pem = open(d + '/int.crt', 'rb').read()
inter = x509.load_pem_x509_certificates(inter_pem)
leaves = [open(f'{d}/leaf-{i}.crt', 'rb').read() for i in range(n)]
now = datetime.datetime.now(datetime.timezone.utc)
builder = PolicyBuilder().store(store).time(now)
t0 = time.perf_counter()
for i, pem in enumerate(leaves):
    v = builder.build_server_verifier(x509.DNSName(f'svc-{i}.example.org'))
    v.verify(x509.load_pem_x509_certificate(pem), x509.load_pem_x509_certificates(inter_pem) if sent else inter)
print(n / (time.perf_counter() - t0))
`;

function pycaRound(dir: string, sent: boolean): number | undefined {
  const r = spawnSync('python3', ['-c', PYCA, dir, String(LEAVES), sent ? 'sent' : 'given'], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout.trim()) : undefined;
}

/** Runs the verification benchmark and returns its BENCHMARKS.md section. */
export async function verifySection(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-bench-verify-'));
  try {
    const ca = await CertificateAuthority.init({ home: path.join(dir, 'ca'), name: 'Bench' });
    fs.copyFileSync(path.join(dir, 'ca', 'intermediate.crt'), path.join(dir, 'int.crt'));
    fs.copyFileSync(path.join(dir, 'ca', 'root.crt'), path.join(dir, 'root.crt'));
    const leaves: Buffer[] = [];
    const files: string[] = [];
    for (let i = 0; i < LEAVES; i++) {
      const issued = await ca.issue({ profile: 'server', name: `v${i}`, names: { dns: [host(i)] } });
      const file = path.join(dir, `leaf-${i}.crt`);
      fs.writeFileSync(file, issued.chainPem.slice(0, issued.chainPem.indexOf('-----END CERTIFICATE-----') + 26));
      leaves.push(decodePem(fs.readFileSync(file, 'latin1'), file)[0]!.der);
      files.push(file);
    }
    oursRound(ca, leaves, true); // warm-up
    const ours: number[] = [];
    const oursSent: number[] = [];
    const ossl: number[] = [];
    const osslProc: number[] = [];
    const pyca: number[] = [];
    const pycaSent: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      ours.push(oursRound(ca, leaves, false));
      oursSent.push(oursRound(ca, leaves, true));
      const o = opensslRound(dir, files);
      ossl.push(o.inProcess);
      osslProc.push(o.perProcess);
      const p = pycaRound(dir, false);
      if (p !== undefined) pyca.push(p);
      const ps = pycaRound(dir, true);
      if (ps !== undefined) pycaSent.push(ps);
      process.stderr.write(
        `verify round ${r + 1}/${ROUNDS}: mtlskit ${fmt(ours.at(-1)!)}/s (sent ${fmt(oursSent.at(-1)!)}/s), openssl ${fmt(o.inProcess)}/s, ` +
          `pyca ${p === undefined ? 'n/a' : fmt(p)}/s\n`,
      );
    }
    await ca.close();
    const [, ecdsaVerify] = opensslSpeed('ecdsap256', spawnSync) as [number, number];
    const o = median(ours);
    const row = (what: string, v: number) => `| ${what} | ${fmt(v)} | ${fmt(v / o, 2)} |`;
    return `## Path validation (root -> intermediate -> P-256 server leaf, purpose server, host name)

Each side parses the leaf and validates its path to the root for the purpose serverAuth and the leaf's host
name, ${LEAVES} different leaves per round, ${ROUNDS} interleaved rounds, medians. OpenSSL runs as one
\`openssl verify\` process over all the leaves (a process over one leaf is timed too and taken out, which leaves
its in-process cost); pyca/cryptography ${pyca.length ? '' : '(not installed here) '}runs its verifier in a loop in one
Python process. Two ECDSA P-256 signature checks per path are the floor: \`openssl speed\` verifies ${fmt(ecdsaVerify)}/s
on one core, so ${fmt(ecdsaVerify / 2)} paths/s at most.

Two cases. *Given*: the intermediate is loaded once and passed with every leaf (\`openssl verify -untrusted\`, a
server's configured chain); mtlskit then checks its signature under the root once per process, so one signature
per path. *Sent*: the intermediate arrives with each leaf, as in a TLS handshake, and is parsed, its key loaded
and its signature checked every time.

| what | paths / s | ratio to mtlskit (given) |
|---|---:|---:|
${row('mtlskit `verifyChain` (strict profile, in-process), intermediate given', o)}
${row('mtlskit, intermediate sent with each leaf', median(oursSent))}
${row('openssl verify (in one process, start-up taken out), intermediate given', median(ossl))}
${row('openssl verify, one process per certificate (a shell loop)', median(osslProc))}
${pyca.length ? row('pyca/cryptography 48 verifier (in-process), intermediate given', median(pyca)) : '| pyca/cryptography | not installed | |'}
${pycaSent.length ? row('pyca/cryptography, intermediate sent with each leaf', median(pycaSent)) : ''}
${row('limit: 2 ECDSA P-256 verifications per path (`openssl speed`)', ecdsaVerify / 2)}

With the intermediate sent, mtlskit runs at ${fmt(median(oursSent) / median(pycaSent.length ? pycaSent : [NaN]), 2)}x pyca's rate. The difference is
parsing two certificates in JavaScript and importing the intermediate's key into OpenSSL for the leaf's signature
(~60 µs as a JWK; OpenSSL 3.0's DER decoder took ~120-200 µs, which is why keys are imported as JWK).
`;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
