/**
 * Revocation at 100,000 revoked certificates (issue 14): how long `revoke` takes (inventory + a complete CRL of
 * 100,000 entries, signed and written) beside `openssl ca -gencrl` over the same number of entries, and OCSP answers
 * per second from `mtls ca ocsp` beside `openssl ocsp -index` as a responder, both asked by the same HTTP client.
 */
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { CertificateAuthority } from '../src/ca/authority.js';
import { crlPaths } from '../src/ca/revocation.js';
import { OcspResponder, serveOcsp } from '../src/ca/ocsp-responder.js';
import { fmt, freePort, median } from './lib.js';

const REVOKED = Number(process.env['BENCH_REVOKED'] ?? 100_000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const OCSP_REQUESTS = 1500;

/** REVOKED revoked certificates written straight into the inventory (one transaction), and the same as an index.txt. */
function fill(home: string, dir: string): void {
  const db = new Database(path.join(home, 'inventory.db'));
  const insert = db.prepare(`INSERT INTO certificates (serial, profile, subject, issuer, sans, spiffe_id, not_before,
    not_after, fingerprint_sha256, status, issued_at, der, revoked_at, revocation_reason)
    VALUES (?, 'client', 'CN=x', 'CN=y', '[]', NULL, ?, ?, ?, 'revoked', ?, x'00', ?, 'keyCompromise')`);
  const now = Date.now();
  const index: string[] = [];
  const t = (ms: number) => new Date(ms).toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';
  db.transaction(() => {
    for (let i = 0; i < REVOKED; i++) {
      const serial = crypto.randomBytes(16);
      serial[0] = (serial[0]! & 0x3f) | 0x40;
      const hex = serial.toString('hex');
      insert.run(hex, now - 86400e3, now + 90 * 86400e3, crypto.randomBytes(32).toString('hex'), now, now - i * 1000);
      index.push(
        `R\t${t(now + 90 * 86400e3)}\t${t(now - i * 1000)},keyCompromise\t${hex.toUpperCase()}\tunknown\t/CN=x${i}`,
      );
    }
  })();
  db.close();
  fs.writeFileSync(path.join(dir, 'index.txt'), index.join('\n') + '\n');
}

function opensslGencrl(dir: string, home: string): number {
  fs.writeFileSync(
    path.join(dir, 'ca.cnf'),
    `[ca]\ndefault_ca=d\n[d]\ndatabase=${dir}/index.txt\ndefault_md=sha256\ndefault_crl_days=1\ncrlnumber=${dir}/crlnumber\n`,
  );
  fs.writeFileSync(path.join(dir, 'crlnumber'), '01\n');
  const t0 = process.hrtime.bigint();
  const r = spawnSync(
    'openssl',
    [
      'ca',
      '-gencrl',
      '-config',
      path.join(dir, 'ca.cnf'),
      '-keyfile',
      path.join(home, 'intermediate.key'),
      '-cert',
      path.join(home, 'intermediate.crt'),
      '-out',
      path.join(dir, 'openssl.crl'),
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl ca -gencrl: ${r.stderr}`);
  return Number(process.hrtime.bigint() - t0) / 1e6;
}

/** Sequential POSTs of `body` (a new connection each, as openssl ocsp serves them): answers per second. */
async function ocspRate(port: number, body: Buffer, n: number): Promise<number> {
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port,
          path: '/ocsp',
          method: 'POST',
          agent: false,
          headers: { 'content-type': 'application/ocsp-request', 'content-length': body.length },
        },
        (res) => {
          res.resume();
          res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
        },
      );
      req.on('error', reject);
      req.setTimeout(10_000, () => req.destroy(new Error(`no OCSP answer on port ${port} within 10 s`)));
      req.end(body);
    });
  for (let i = 0; i < 50; i++) await one();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) await one();
  return n / (Number(process.hrtime.bigint() - t0) / 1e9);
}

export async function revocationSection(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-bench-revocation-'));
  let child: ReturnType<typeof spawn> | undefined;
  try {
    const home = path.join(dir, 'ca');
    const ca = await CertificateAuthority.init({ home, name: 'Bench' });
    fill(home, dir);
    const ours: number[] = [];
    const peer: number[] = [];
    const victims = [];
    for (let r = 0; r <= ROUNDS; r++)
      victims.push(
        await ca.issue({ profile: 'client', name: `v${r}`, names: { spiffeId: `spiffe://b.example/v${r}` } }),
      );
    for (let r = 0; r <= ROUNDS; r++) {
      const t0 = process.hrtime.bigint();
      await ca.revoke(victims[r]!.certificate, { reason: 'keyCompromise' });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const p = opensslGencrl(dir, home);
      if (r > 0) {
        ours.push(ms);
        peer.push(p);
      }
      process.stderr.write(`revocation round ${r}/${ROUNDS}: revoke ${fmt(ms)} ms, openssl ca -gencrl ${fmt(p)} ms\n`);
    }
    const crlBytes = fs.statSync(crlPaths(home).intermediate).size;
    const peerBytes = fs.statSync(path.join(dir, 'openssl.crl')).size;

    // OCSP: one request about a live certificate (openssl makes it, with a nonce), answered by both responders.
    const good = victims[0]!; // revoked; the answer is signed either way
    fs.writeFileSync(path.join(dir, 'leaf.crt'), good.chainPem);
    spawnSync('openssl', [
      'ocsp',
      '-issuer',
      path.join(home, 'intermediate.crt'),
      '-cert',
      path.join(dir, 'leaf.crt'),
      '-reqout',
      path.join(dir, 'req.der'),
    ]);
    const req = fs.readFileSync(path.join(dir, 'req.der'));
    const responder = new OcspResponder(ca);
    responder.responder(); // issues HOME/ocsp/responder.{crt,key}, which openssl signs with too
    const ourPort = await freePort();
    const server = await serveOcsp(responder, home, { host: '127.0.0.1', port: ourPort }, () => undefined);
    const peerPort = await freePort();
    child = spawn(
      'openssl',
      [
        'ocsp',
        '-index',
        path.join(dir, 'index.txt'),
        '-port',
        String(peerPort),
        '-rsigner',
        path.join(home, 'ocsp', 'responder.crt'),
        '-rkey',
        path.join(home, 'ocsp', 'responder.key'),
        '-CA',
        path.join(home, 'intermediate.crt'),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    // openssl reads the index first, then says it waits. (Not a TCP probe: a connection that closes without a
    // request stalls openssl ocsp, which serves one connection at a time with blocking reads.)
    let peerErr = '';
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`openssl ocsp did not start: ${peerErr}`)), 60_000);
      child!.stderr?.on('data', (d) => {
        peerErr += d;
        if (/waiting for OCSP client connections/.test(peerErr)) {
          clearTimeout(t);
          resolve();
        }
      });
    });
    const oursOcsp: number[] = [];
    const peerOcsp: number[] = [];
    for (let r = 0; r < 3; r++) {
      oursOcsp.push(await ocspRate(ourPort, req, OCSP_REQUESTS));
      peerOcsp.push(await ocspRate(peerPort, req, OCSP_REQUESTS));
    }
    server.close();
    await ca.close();
    const o = median(ours);
    const p = median(peer);
    const oo = median(oursOcsp);
    const po = median(peerOcsp);
    return `## Revocation at ${fmt(REVOKED)} revoked certificates

\`mtls revoke\` does in one step what a CRL-publishing CA must: it updates the inventory and writes a complete,
signed CRL of every revoked, unexpired certificate (${fmt(REVOKED)} + the new ones), inside one SQLite transaction.
The peer is \`openssl ca -gencrl\` over an index.txt of the same ${fmt(REVOKED)} entries, which only writes the CRL
(one process each, start-up included). ${ROUNDS} rounds, medians. OCSP: the same request (with a nonce) POSTed
${fmt(OCSP_REQUESTS)} times, one connection each, to \`mtls ca ocsp\` and to \`openssl ocsp -index\` (reading the same
${fmt(REVOKED)}-line index), signed by the same responder key.

| what | mtlskit | openssl | mtlskit's advantage (>1: mtlskit better) |
|---|---:|---:|---:|
| revoke + complete CRL, ms (lower is better) | ${fmt(o)} | ${fmt(p)} | ${fmt(p / o, 2)} |
| CRL size, bytes | ${fmt(crlBytes)} | ${fmt(peerBytes)} | ${fmt(peerBytes / crlBytes, 2)} |
| OCSP answers / s | ${fmt(oo)} | ${fmt(po)} | ${fmt(oo / po, 2)} |

Vault was reported to take 2-3 s of CPU per revocation at 17,000 revoked certificates (hashicorp/vault#9176).
Where the revocation's time goes at this size: reading the 100,000 rows from SQLite and writing the three files
with fsync. The first version (whole inventory rows, each entry built from small DER buffers) took 2.5 s here;
now only serial, time and reason are read, and the entries are written straight into one buffer.
Found while measuring: \`openssl ocsp\` as a responder serves one connection at a time with blocking reads, so one
TCP connection that closes without a request (a health probe) stalls it for every client; \`mtls ca ocsp\` bounds
each request (5 s for the head, 10 s in all) and serves others meanwhile.
`;
  } finally {
    child?.kill(); // also when a round failed: a stalled openssl ocsp spins on a CPU
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
