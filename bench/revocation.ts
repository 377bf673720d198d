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
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, median, treeCpuSeconds, waitForPort } from './lib.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mtls.js');
const HS_BLOCK = Number(process.env['BENCH_HANDSHAKES'] ?? 400);

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

/** Full handshakes, one at a time: new connection, a 2-byte echo through the server when `echo`, close. */
async function handshakeBlock(port: number, ctx: tls.SecureContext, n: number, echo: boolean): Promise<void> {
  for (let i = 0; i < n; i++)
    await new Promise<void>((resolve, reject) => {
      const c = tls.connect({ host: '127.0.0.1', port, secureContext: ctx, servername: 'localhost' }, () => {
        if (!echo) {
          c.destroy();
          return resolve();
        }
        c.write('hi');
      });
      c.on('data', () => {
        c.destroy();
        resolve();
      });
      c.on('error', reject);
    });
}

/**
 * Server CPU per full mTLS handshake with the 100,000-entry CRLs loaded, over the same server without them: both
 * proxy engines, and as the reference what OpenSSL's own CRL check costs (`openssl s_server -crl_check_all`).
 * Blocks of HS_BLOCK handshakes, interleaved, ROUNDS rounds; CPU from /proc (the server's process tree).
 */
async function handshakeCpu(home: string, ca: CertificateAuthority, dir: string): Promise<Map<string, number>> {
  const write = (name: string, text: string, mode = 0o644) => {
    fs.writeFileSync(path.join(dir, name), text, { mode });
    return path.join(dir, name);
  };
  const srv = await ca.issue({ profile: 'server', name: 'hs-server', names: { dns: ['localhost'] } });
  const cli = await ca.issue({ profile: 'client', name: 'hs-client', names: { spiffeId: 'spiffe://b.example/c' } });
  const keyPem = (i: typeof srv) => i.privateKey!.export({ type: 'pkcs8', format: 'pem' }).toString();
  const cert = write('hs-server.crt', srv.chainPem);
  const key = write('hs-server.key', keyPem(srv), 0o600);
  const bundle = write('hs-ca.crt', ca.bundlePem);
  const crl = crlPaths(home).pem;
  const ctx = tls.createSecureContext({ cert: cli.chainPem, key: keyPem(cli), ca: ca.bundlePem });
  const echo = net.createServer((s) => {
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
  const target = (echo.address() as net.AddressInfo).port;
  const servers: { name: string; port: number; child: ReturnType<typeof spawn>; echo: boolean }[] = [];
  try {
    for (const engine of ['native', 'node'])
      for (const withCrl of [false, true]) {
        const port = await freePort();
        const child = spawn(
          process.execPath,
          [
            BIN,
            'proxy',
            'server',
            '--listen',
            `127.0.0.1:${port}`,
            '--target',
            `127.0.0.1:${target}`,
            '--cert',
            cert,
            '--key',
            key,
            '--ca',
            bundle,
            '--allow',
            'any',
            '--engine',
            engine,
            ...(withCrl ? ['--crl', crl] : []),
          ],
          { stdio: 'ignore' },
        );
        servers.push({ name: `${engine}${withCrl ? '+crl' : ''}`, port, child, echo: true });
      }
    for (const withCrl of [false, true]) {
      const port = await freePort();
      const child = spawn(
        'openssl',
        [
          's_server',
          '-quiet',
          '-accept',
          `127.0.0.1:${port}`,
          '-cert',
          cert,
          '-cert_chain',
          cert,
          '-key',
          key,
          '-CAfile',
          bundle,
          '-Verify',
          '2',
          '-verify_return_error',
          ...(withCrl ? ['-CRL', crl, '-crl_check_all'] : []),
        ],
        { stdio: ['pipe', 'ignore', 'ignore'] },
      );
      servers.push({ name: `openssl${withCrl ? '+crl' : ''}`, port, child, echo: false });
    }
    for (const withCrl of [false, true]) {
      // mtls serve (createMtlsServer): answers each connection with a line and closes.
      const port = await freePort();
      const child = spawn(
        process.execPath,
        [
          BIN,
          'serve',
          '--host',
          '127.0.0.1',
          '--port',
          String(port),
          '--cert',
          cert,
          '--key',
          key,
          '--ca',
          bundle,
          '--allow',
          'any',
          ...(withCrl ? ['--crl', crl] : []),
        ],
        { stdio: 'ignore' },
      );
      servers.push({ name: `serve${withCrl ? '+crl' : ''}`, port, child, echo: true });
    }
    for (const withCrl of [false, true]) {
      // The path mtlskit no longer takes: Node's own TLS server given the CRLs through its crl option.
      const port = await freePort();
      const script = `const fs = require('fs'), tls = require('tls');
        const [port, cert, key, ca, crl] = process.argv.slice(1);
        const crls = crl ? fs.readFileSync(crl, 'latin1').match(/-----BEGIN X509 CRL-----[^-]+-----END X509 CRL-----/g) : undefined;
        tls.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key), ca: fs.readFileSync(ca),
          requestCert: true, rejectUnauthorized: true, ...(crls ? { crl: crls } : {}) }, (s) => s.end('hi'))
          .listen(Number(port), '127.0.0.1');`;
      const child = spawn(
        process.execPath,
        ['-e', script, String(port), cert, key, bundle, ...(withCrl ? [crl] : [])],
        {
          stdio: 'ignore',
        },
      );
      servers.push({ name: `nodecrl${withCrl ? '+crl' : ''}`, port, child, echo: true });
    }
    for (const s of servers) await waitForPort(s.port);
    for (const s of servers) await handshakeBlock(s.port, ctx, 20, s.echo); // warm-up (and loading the CRL)
    const cpu = new Map(servers.map((s) => [s.name, [] as number[]]));
    for (let r = 0; r < ROUNDS; r++)
      for (const s of servers) {
        const c0 = treeCpuSeconds(s.child.pid!);
        await handshakeBlock(s.port, ctx, HS_BLOCK, s.echo);
        cpu.get(s.name)!.push(((treeCpuSeconds(s.child.pid!) - c0) / HS_BLOCK) * 1000);
      }
    for (const [name, v] of cpu)
      process.stderr.write(`handshake CPU ${name}: ${v.map((x) => fmt(x, 3)).join(' ')} ms\n`);
    return new Map([...cpu].map(([k, v]) => [k, median(v)]));
  } finally {
    for (const s of servers) s.child.kill();
    echo.close();
  }
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
    const full: number[] = [];
    const since = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
    for (let r = 0; r <= ROUNDS; r++) {
      // Round 0 builds the CRL from the inventory (the rows were inserted behind the CA's back); later revocations
      // append to the CRL published last.
      let t0 = process.hrtime.bigint();
      await ca.revoke(victims[r]!.certificate, { reason: 'keyCompromise' });
      const ms = since(t0);
      t0 = process.hrtime.bigint();
      await ca.publishCrl();
      const all = since(t0);
      const p = opensslGencrl(dir, home);
      if (r > 0) {
        ours.push(ms);
        full.push(all);
        peer.push(p);
      }
      process.stderr.write(
        `revocation round ${r}/${ROUNDS}: revoke ${fmt(ms)} ms, full CRL ${fmt(all)} ms, openssl ca -gencrl ${fmt(p)} ms\n`,
      );
    }
    // The command, start-up included, beside the start-up of an empty Node process.
    const cli: number[] = [];
    const floor: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const v = await ca.issue({
        profile: 'client',
        name: `cli${r}`,
        names: { spiffeId: `spiffe://b.example/cli${r}` },
      });
      let t0 = process.hrtime.bigint();
      const res = spawnSync(process.execPath, [BIN, 'revoke', v.certificate.serialHex, '--home', home], {
        encoding: 'utf8',
      });
      cli.push(since(t0));
      if (res.status !== 0) throw new Error(`mtls revoke: ${res.stderr}`);
      t0 = process.hrtime.bigint();
      spawnSync(process.execPath, ['-e', '']);
      floor.push(since(t0));
    }
    const crlBytes = fs.statSync(crlPaths(home).intermediate).size;
    const hs = await handshakeCpu(home, ca, dir);
    const hsRow = (name: string, label: string) =>
      `| ${label} | ${fmt(hs.get(name)!, 2)} | ${fmt(hs.get(`${name}+crl`)!, 2)} | ${fmt(hs.get(`${name}+crl`)! / hs.get(name)!, 2)} |`;
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
A revocation appends its entry to the CRL published last when that file is exactly the last publication (its
number, issuer and entry count agree with the inventory), so it neither reads the ${fmt(REVOKED)} rows nor encodes
them again; expired entries drop out at the next complete publication (\`mtls ca crl\`, due within the CRL's
lifetime). The peer is \`openssl ca -gencrl\` over an index.txt of the same ${fmt(REVOKED)} entries, which only writes
the CRL (one process each, start-up included). ${ROUNDS} rounds, medians. OCSP: the same request (with a nonce) POSTed
${fmt(OCSP_REQUESTS)} times, one connection each, to \`mtls ca ocsp\` and to \`openssl ocsp -index\` (reading the same
${fmt(REVOKED)}-line index), signed by the same responder key.

| what | mtlskit | openssl | mtlskit's advantage (>1: mtlskit better) |
|---|---:|---:|---:|
| \`revoke()\`: inventory + CRL with the new entry, signed and written, ms (lower is better) | ${fmt(o, 1)} | ${fmt(p)} | ${fmt(p / o, 1)} |
| a complete CRL from the inventory (\`mtls ca crl\`), ms (lower is better) | ${fmt(median(full))} | ${fmt(p)} | ${fmt(p / median(full), 2)} |
| \`mtls revoke\` command, start-up included, ms (an empty \`node -e ''\` takes ${fmt(median(floor))} ms) | ${fmt(median(cli))} | | |
| CRL size, bytes | ${fmt(crlBytes)} | ${fmt(peerBytes)} | ${fmt(peerBytes / crlBytes, 2)} |
| OCSP answers / s | ${fmt(oo)} | ${fmt(po)} | ${fmt(oo / po, 2)} |

Server CPU per full mTLS handshake with the CRLs of these ${fmt(REVOKED)} revoked certificates loaded (\`--crl\`), beside
the same server without them (the issue's target: at most 1.05x). ${ROUNDS} interleaved rounds of ${fmt(HS_BLOCK)}
sequential handshakes each, medians; CPU of the server's process from /proc. The proxies relay a 2-byte echo;
\`mtls serve\` answers a line. mtlskit looks each certificate of the chain up in a hash set built from the CRLs (the native
engine in OpenSSL's verify callback, refusing with certificate_revoked; the Node engine and the library servers at
admission, HTTPS servers again at each request). The last two rows are references: a plain Node TLS server given the
CRLs through its \`crl\` option, which mtlskit used before, and \`openssl s_server -CRL ... -crl_check_all\`.

| server | CPU ms / handshake, no CRL | with ${fmt(REVOKED)}-entry CRL | ratio (target ≤ 1.05) |
|---|---:|---:|---:|
${hsRow('native', '`mtls proxy server` (native engine)')}
${hsRow('node', '`mtls proxy server --engine node`')}
${hsRow('serve', '`mtls serve` (createMtlsServer)')}
${hsRow('nodecrl', "reference: Node's TLS server with its `crl` option (the path mtlskit left)")}
${hsRow('openssl', 'reference: `openssl s_server -crl_check_all` (handshake only)')}

Vault was reported to take 2-3 s of CPU per revocation at 17,000 revoked certificates (hashicorp/vault#9176).
Where a revocation's time goes at this size (measured inside one, in ms): counting the revoked rows (partial
index) 1; reading the last CRL, appending the entry and signing again 20-50; the 6.6 MB \`crl.pem\` 35-50 (base64 and
64-character lines; 1.7x faster than the regular expression it replaced); fsync of the three files 11. Each fresh
5 MB buffer costs ~14 ms of page faults on this machine, so the issue's 50 ms is not reached while every revocation
rewrites a 5 MB CRL and its PEM: delta CRLs (RFC 5280 5.2.4) would be the next step. Before the append path a
revocation read and encoded all 100,000 rows (the full-CRL row above); the first version took 2.5 s.
Found while measuring: \`openssl ocsp\` as a responder serves one connection at a time with blocking reads, so one
TCP connection that closes without a request (a health probe) stalls it for every client; \`mtls ca ocsp\` bounds
each request (5 s for the head, 10 s in all) and serves others meanwhile.
`;
  } finally {
    child?.kill(); // also when a round failed: a stalled openssl ocsp spins on a CPU
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
