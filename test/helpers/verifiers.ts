/**
 * The independent verifiers our path validation is compared with (issue 13): `openssl verify` (with and without
 * -x509_strict) and pyca/cryptography's Rust verifier (`cryptography.x509.verification`), on the same files.
 */
import { spawnSync } from 'node:child_process';
import { type Purpose } from '../../src/pki/path-rules.js';
import { openssl, tempDir, writePem, type TestCert } from './pki.js';

export interface VerifierCase {
  leaf: TestCert;
  anchors: TestCert[];
  untrusted: TestCert[];
  purpose: Purpose;
  dns?: string;
  at: Date;
}

export interface Verdict {
  ok: boolean;
  text: string;
}

function files(c: VerifierCase): { anchors: string; untrusted?: string; leaf: string } {
  const dir = tempDir('mtls-verifiers-');
  return {
    anchors: writePem(dir, 'ca.pem', c.anchors),
    ...(c.untrusted.length ? { untrusted: writePem(dir, 'untrusted.pem', c.untrusted) } : {}),
    leaf: writePem(dir, 'leaf.pem', [c.leaf]),
  };
}

/** `openssl verify [-x509_strict] -purpose ... -attime ...` on the case. */
export function opensslVerdict(c: VerifierCase, strict: boolean): Verdict {
  const f = files(c);
  const args = ['verify', ...(strict ? ['-x509_strict'] : []), '-CAfile', f.anchors];
  if (c.purpose !== 'any') args.push('-purpose', c.purpose === 'server' ? 'sslserver' : 'sslclient');
  args.push('-attime', String(Math.floor(c.at.getTime() / 1000)));
  if (f.untrusted) args.push('-untrusted', f.untrusted);
  if (c.dns) args.push('-verify_hostname', c.dns);
  args.push(f.leaf);
  const r = openssl(args);
  return { ok: r.status === 0, text: `${r.stdout}${r.stderr}`.trim() };
}

const PYCA = `
import sys, json, datetime
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store
load = lambda p: x509.load_pem_x509_certificates(open(p, 'rb').read())
out = []
for c in json.load(sys.stdin):
    try:
        b = PolicyBuilder().store(Store(load(c['anchors']))).time(
            datetime.datetime.fromtimestamp(c['at'], datetime.timezone.utc))
        v = b.build_client_verifier() if c['purpose'] == 'client' else b.build_server_verifier(x509.DNSName(c['dns']))
        v.verify(load(c['leaf'])[0], load(c['untrusted']) if c['untrusted'] else [])
        out.append({'ok': True, 'text': 'OK'})
    except Exception as e:
        out.append({'ok': False, 'text': f'{type(e).__name__}: {e}'})
print(json.dumps(out))
`;

/** Whether pyca/cryptography's verifier is importable (python3 with cryptography 42+). */
export const hasPyca =
  spawnSync('python3', ['-c', 'from cryptography.x509.verification import PolicyBuilder']).status === 0;

/**
 * pyca/cryptography's verdicts on many cases in one Python process (the import costs ~150 ms). A server case
 * is verified for `dns` (pyca needs a name; default good.example.org), a client case with the client verifier.
 */
export function pycaVerdicts(cases: VerifierCase[]): Verdict[] {
  const input = cases.map((c) => {
    const f = files(c);
    return {
      anchors: f.anchors,
      untrusted: f.untrusted ?? null,
      leaf: f.leaf,
      purpose: c.purpose,
      dns: c.dns ?? 'good.example.org',
      at: c.at.getTime() / 1000,
    };
  });
  const r = spawnSync('python3', ['-c', PYCA], { input: JSON.stringify(input), encoding: 'utf8', timeout: 60_000 });
  if (r.status !== 0) throw new Error(`pyca verifier failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Verdict[];
}
