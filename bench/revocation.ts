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
import { parseCrl } from '../src/pki/crl.js';
import { OcspResponder } from '../src/ca/ocsp-responder.js';
import { serveOcsp } from '../src/ca/ocsp-server.js';
import net from 'node:net';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { fmt, freePort, median, opensslSpeed, treeCpuSeconds, waitForPort } from './lib.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mtls.js');
const HS_BLOCK = Number(process.env['BENCH_HANDSHAKES'] ?? 200);

const REVOKED = Number(process.env['BENCH_REVOKED'] ?? 100_000);
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
/** Revocations are quick and their times spread (a garbage collection of the 100,000-row publication before them). */
const REVOKE_ROUNDS = 3 * ROUNDS;
/**
 * Handshake rounds: many short ones, paired, as the machine's load drifts; an odd number, so that the median of
 * the ratios is one of them (with 10, the upper of the two middle ones was taken: 1.07 where they were 1.00 and 1.07).
 */
const HS_ROUNDS = 4 * ROUNDS + 1;
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

/** ab (apache2-utils): a load generator in C, so that the client's cost is small and the same for both responders. */
const AB = fs.existsSync('/usr/bin/ab') ? '/usr/bin/ab' : undefined;
const AB_REQUESTS = 6000;

const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => fs.existsSync(p));

/** nginx answering every request with a constant body: what a C server that does no work at all can do here. */
async function startConstantNginx(dir: string, port: number): Promise<ReturnType<typeof spawn>> {
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/nginx-err.log;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path ${dir}/b; proxy_temp_path ${dir}/p; fastcgi_temp_path ${dir}/f; uwsgi_temp_path ${dir}/u; scgi_temp_path ${dir}/s;
  server { listen 127.0.0.1:${port}; client_body_buffer_size 16k; location / { return 200 "${'x'.repeat(700)}"; } } }
`,
  );
  const child = spawn(NGINX!, ['-c', conf, '-e', `${dir}/nginx-err.log`], { stdio: 'ignore' });
  await waitForPort(port);
  return child;
}

/**
 * Starts `args` with its output going to a file (not a pipe: the bench blocks in spawnSync(ab) meanwhile, and a
 * full pipe would stall a child that logs every request) and resolves, with the first group of `re` in that
 * output, once it appears.
 */
async function startLogged(
  command: string,
  args: string[],
  log: string,
  re: RegExp,
  what: string,
): Promise<{ child: ReturnType<typeof spawn>; match: string }> {
  const fd = fs.openSync(log, 'w');
  const child = spawn(command, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const out = fs.readFileSync(log, 'utf8');
    const m = re.exec(out);
    if (m) return { child, match: m[1] ?? m[0] };
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill();
      throw new Error(`${what} did not start: ${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** How many ab runs were tried again: withCpu leaves out the CPU of a run that was. */
let abRetries = 0;

/**
 * Requests per second that ab measures for `n` POSTs of `file`, `c` at a time, a new connection each (with
 * `keepAlive`, connections are kept when the server keeps them: openssl ocsp closes each anyway). `restart`, if given, starts the server afresh before the one more try: `openssl ocsp` spins for good on a
 * connection that closes without a request (reproduced by hand: connect, close; every later client times out), and
 * ab now and then leaves one at the end of a run. In this session's second bench run the retry alone stalled again.
 */
async function abRate(
  port: number,
  file: string,
  n: number,
  c: number,
  keepAlive = false,
  restart?: () => Promise<void>,
  retried = false,
): Promise<number> {
  const url = `http://127.0.0.1:${port}/ocsp`;
  const args = [
    ...(keepAlive ? ['-k'] : []),
    ...['-q', '-s', '10', '-n', String(n), '-c', String(c), '-p', file, '-T', 'application/ocsp-request', url],
  ];
  const r = spawnSync(AB!, args, { encoding: 'utf8' });
  const rate = /Requests per second:\s+([\d.]+)/.exec(r.stdout)?.[1];
  // ab counts answers of another length than the first as failed: signatures vary by a byte or two, so only
  // connection, receive and exception failures and non-200 answers count here.
  const broken = /Non-2xx responses|\(Connect: [1-9]|Receive: [1-9]|Exceptions: [1-9]/.exec(r.stdout);
  if (r.status !== 0 || !rate || broken) {
    const why = `ab against ${url}: ${broken?.[0] ?? ''} ${r.stderr.trim()}`;
    if (retried) throw new Error(why);
    process.stderr.write(`${why}; ${restart ? 'restarting the server, then ' : ''}trying once more\n`);
    abRetries++;
    await restart?.();
    return abRate(port, file, n, c, keepAlive, restart, true);
  }
  return Number(rate);
}

/**
 * Runs `ab` (`rate`) and adds to `acc` the CPU that the server `pid()` spent meanwhile (its own process, from
 * /proc) and the requests it answered: what an answer costs the responder, whatever the client's cost (on 2 cores,
 * ab's own ~45 µs per request caps the rate it can measure near 22,000/s). A run tried again is left out.
 */
async function withCpu(
  acc: { cpu: number; n: number },
  pid: () => number,
  n: number,
  rate: () => Promise<number>,
): Promise<number> {
  const [p, c0, retries] = [pid(), treeCpuSeconds(pid()), abRetries];
  const r = await rate();
  if (abRetries === retries) {
    acc.cpu += treeCpuSeconds(p) - c0;
    acc.n += n;
  }
  return r;
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
    // Each server beside its twin with the CRLs, back to back (the twin first in every other round): the ratio of
    // each pair is taken within a round, so that the machine's load, which drifts over minutes here, cancels out.
    for (let r = 0; r < HS_ROUNDS; r++)
      for (let i = 0; i < servers.length; i += 2)
        for (const s of r % 2 ? [servers[i + 1]!, servers[i]!] : [servers[i]!, servers[i + 1]!]) {
          const c0 = treeCpuSeconds(s.child.pid!);
          await handshakeBlock(s.port, ctx, HS_BLOCK, s.echo);
          cpu.get(s.name)!.push(((treeCpuSeconds(s.child.pid!) - c0) / HS_BLOCK) * 1000);
        }
    for (const [name, v] of cpu)
      process.stderr.write(`handshake CPU ${name}: ${v.map((x) => fmt(x, 3)).join(' ')} ms\n`);
    const result = new Map([...cpu].map(([k, v]) => [k, median(v)]));
    for (const s of servers.filter((x) => !x.name.endsWith('+crl'))) {
      const [plain, withCrl] = [cpu.get(s.name)!, cpu.get(`${s.name}+crl`)!];
      result.set(`${s.name}:ratio`, median(plain.map((p, r) => withCrl[r]! / p)));
    }
    return result;
  } finally {
    for (const s of servers) s.child.kill();
    echo.close();
  }
}

export async function revocationSection(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-bench-revocation-'));
  let child: ReturnType<typeof spawn> | undefined;
  const children: ReturnType<typeof spawn>[] = [];
  let constantPort = 0;
  let constantPid = 0;
  try {
    const home = path.join(dir, 'ca');
    const ca = await CertificateAuthority.init({ home, name: 'Bench' });
    fill(home, dir);
    const ours: number[] = [];
    const peer: number[] = [];
    const victims = [];
    for (let r = 0; r <= REVOKE_ROUNDS; r++)
      victims.push(
        await ca.issue({ profile: 'client', name: `v${r}`, names: { spiffeId: `spiffe://b.example/v${r}` } }),
      );
    const full: number[] = [];
    const since = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;
    // Round 0 builds the CRL from the inventory (the rows were inserted behind the CA's back); later revocations
    // append to the CRL published last. The complete publications come after them: interleaved, each left 100,000
    // entries of garbage for the next revocation's garbage collector.
    for (let r = 0; r <= REVOKE_ROUNDS; r++) {
      const t0 = process.hrtime.bigint();
      await ca.revoke(victims[r]!.certificate, { reason: 'keyCompromise' });
      if (r > 0) ours.push(since(t0));
      process.stderr.write(`revocation round ${r}/${REVOKE_ROUNDS}: revoke ${fmt(since(t0), 1)} ms\n`);
    }
    // What was measured must be a CRL of every revoked certificate: the rows written behind the CA's back too (a
    // kept count once let round 0 append to the CRL of init, and the 100,000 went missing at 8 ms a revocation).
    const listed = parseCrl(fs.readFileSync(crlPaths(home).intermediate)).revoked.size;
    if (listed !== REVOKED + REVOKE_ROUNDS + 1)
      throw new Error(
        `the CRL lists ${listed} entries, not ${REVOKED + REVOKE_ROUNDS + 1}: the bench measured another thing`,
      );
    for (let r = 0; r < ROUNDS; r++) {
      const t0 = process.hrtime.bigint();
      await ca.publishCrl();
      full.push(since(t0));
      peer.push(opensslGencrl(dir, home));
      process.stderr.write(`full CRL round ${r}: ${fmt(full[r]!)} ms, openssl ca -gencrl ${fmt(peer[r]!)} ms\n`);
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
      `| ${label} | ${fmt(hs.get(name)!, 2)} | ${fmt(hs.get(`${name}+crl`)!, 2)} | ${fmt(hs.get(`${name}:ratio`)!, 2)} |`;
    const peerBytes = fs.statSync(path.join(dir, 'openssl.crl')).size;

    // OCSP: one request about a live certificate, as openssl makes it with a nonce (signed afresh by both
    // responders) and without one (RFC 5019: mtls ca ocsp answers it from what it kept), answered by both.
    const good = victims[0]!; // revoked; the answer is signed either way
    fs.writeFileSync(path.join(dir, 'leaf.crt'), good.chainPem);
    const reqFile = path.join(dir, 'req.der');
    const plainFile = path.join(dir, 'req-no-nonce.der');
    for (const [file, extra] of [
      [reqFile, []],
      [plainFile, ['-no_nonce']],
    ] as const)
      spawnSync('openssl', [
        'ocsp',
        '-issuer',
        path.join(home, 'intermediate.crt'),
        '-cert',
        path.join(dir, 'leaf.crt'),
        ...extra,
        '-reqout',
        file,
      ]);
    const req = fs.readFileSync(reqFile);
    const responder = new OcspResponder(ca);
    await responder.responder(); // issues HOME/ocsp/responder.{crt,key}, which openssl signs with too
    const ourPort = await freePort();
    const nodePort = await freePort();
    // With ab, `mtls ca ocsp` runs as its own process, as openssl ocsp does; without it, the Node client shares
    // the bench process with an in-process responder (and is the bottleneck for both).
    const server = AB ? undefined : await serveOcsp(responder, home, { host: '127.0.0.1', port: ourPort }, () => {});
    if (AB) {
      for (const [engine, port] of [
        ['native', ourPort],
        ['node', nodePort],
      ] as const) {
        const started = await startLogged(
          process.execPath,
          [BIN, 'ca', 'ocsp', '--listen', `127.0.0.1:${port}`, '--home', home, '--engine', engine],
          path.join(dir, `ocsp-${engine}.log`),
          /OCSP responder on/,
          `mtls ca ocsp --engine ${engine}`,
        );
        children.push(started.child);
      }
      if (NGINX) {
        constantPort = await freePort();
        const nginx = await startConstantNginx(dir, constantPort);
        children.push(nginx);
        constantPid = nginx.pid!;
      }
    }
    const peerPort = await freePort();
    // openssl reads the index first, then says it waits. (Not a TCP probe: a connection that closes without a
    // request makes openssl ocsp spin on it for good; see abRate.) Its output goes to a file: it writes a line per
    // request, and a pipe nobody reads during spawnSync(ab) stalls it.
    const startPeer = async () => {
      child = (
        await startLogged(
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
          path.join(dir, 'openssl-ocsp.log'),
          /waiting for OCSP client connections/,
          'openssl ocsp',
        )
      ).child;
    };
    const restartPeer = async () => {
      const exited = new Promise((r) => child!.once('exit', r));
      child!.kill('SIGKILL');
      await exited;
      await startPeer();
    };
    await startPeer();
    // Each row: [label, our rate, openssl's rate], medians of 3 rounds; the rounds interleave the rows.
    type Case = { label: string; ours: () => Promise<number>; peer: () => Promise<number> };
    const nativePid = () => children[0]?.pid ?? 0;
    const peerPid = () => child!.pid!;
    const sum = () => ({ cpu: 0, n: 0 });
    const cpu = {
      nonce: { ours: sum(), peer: sum() },
      plain: { ours: sum(), peer: sum() },
      // nginx's CPU per request (master and worker), beside openssl's without a nonce: a connection's own cost here
      constant: { ours: sum(), peer: sum() },
    };
    const cases: Case[] = AB
      ? [
          ...(
            [
              ['with a nonce, one at a time (`ab -c 1`)', reqFile, 1, false],
              ['with a nonce, 8 at a time (`ab -c 8`)', reqFile, 8, false],
              ['with a nonce, 8 at a time, connections kept (`ab -k -c 8`)', reqFile, 8, true],
              ['RFC 5019 (no nonce), one at a time (`ab -c 1`)', plainFile, 1, false],
              ['RFC 5019 (no nonce), 8 at a time (`ab -c 8`)', plainFile, 8, false],
              ['RFC 5019 (no nonce), 8 at a time, connections kept (`ab -k -c 8`)', plainFile, 8, true],
            ] as const
          ).map(([label, file, c, k]) => {
            // The CPU rows come from the rows with a new connection per request, 8 at a time.
            const acc = c === 8 && !k ? (file === reqFile ? cpu.nonce : cpu.plain) : undefined;
            const measured = (port: number, who: 'ours' | 'peer', pid: () => number) => () => {
              const restart = who === 'peer' ? restartPeer : undefined;
              const rate = () => abRate(port, file, AB_REQUESTS, c, k, restart);
              return acc ? withCpu(acc[who], pid, AB_REQUESTS, rate) : rate();
            };
            return { label, ours: measured(ourPort, 'ours', nativePid), peer: measured(peerPort, 'peer', peerPid) };
          }),
          {
            label: 'reference: `mtls ca ocsp --engine node` (every answer in Node), with a nonce, `ab -c 8`',
            ours: () => abRate(nodePort, reqFile, AB_REQUESTS, 8),
            peer: () => abRate(peerPort, reqFile, AB_REQUESTS, 8, false, restartPeer),
          },
          ...(NGINX
            ? [
                {
                  label:
                    'reference: nginx answering a constant (no OCSP work at all), a new connection per ' +
                    'request, `ab -c 8`',
                  ours: () =>
                    withCpu(
                      cpu.constant.ours,
                      () => constantPid,
                      AB_REQUESTS,
                      () => abRate(constantPort, plainFile, AB_REQUESTS, 8),
                    ),
                  peer: () =>
                    withCpu(cpu.constant.peer, peerPid, AB_REQUESTS, () =>
                      abRate(peerPort, plainFile, AB_REQUESTS, 8, false, restartPeer),
                    ),
                },
              ]
            : []),
        ]
      : [
          {
            label: 'OCSP answers / s (Node client in the bench process; install apache2-utils for `ab`)',
            ours: async () => NaN,
            peer: async () => NaN,
          },
        ];
    const rates = cases.map(() => ({ ours: [] as number[], peer: [] as number[] }));
    for (let r = 0; r < 3; r++) {
      for (const [i, c] of cases.entries()) {
        if (AB) {
          rates[i]!.ours.push(await c.ours());
          rates[i]!.peer.push(await c.peer());
        } else {
          rates[i]!.ours.push(await ocspRate(ourPort, req, OCSP_REQUESTS));
          rates[i]!.peer.push(await ocspRate(peerPort, req, OCSP_REQUESTS));
        }
      }
    }
    await server?.close();
    await ca.close();
    const o = median(ours);
    const p = median(peer);
    const ocspRows = cases
      .map((c, i) => {
        const [ou, pe] = [median(rates[i]!.ours), median(rates[i]!.peer)];
        return `| OCSP answers / s, ${c.label} | ${fmt(ou)} | ${fmt(pe)} | ${fmt(ou / pe, 2)} |`;
      })
      .concat(
        AB
          ? (
              [
                ['with a nonce', cpu.nonce],
                ['RFC 5019 (no nonce)', cpu.plain],
                [
                  'reference: nginx answering a constant (no OCSP work at all), beside openssl without a nonce',
                  cpu.constant,
                ],
              ] as const
            )
              .filter(([, acc]) => acc.ours.n > 0)
              .map(([what, acc]) => {
                const [ou, pe] = [(acc.ours.cpu / acc.ours.n) * 1e6, (acc.peer.cpu / acc.peer.n) * 1e6];
                return `| OCSP server CPU per answer, µs (lower is better), ${what}, a new connection each (the \`ab -c 8\` rows: ${fmt(acc.ours.n)} requests) | ${fmt(ou, 1)} | ${fmt(pe, 1)} | ${fmt(pe / ou, 2)} |`;
              })
          : [],
      )
      .join('\n');
    // The ratios the prose below quotes: the ceiling of a new connection per request (nginx), and ours there.
    const ratioOf = (prefix: string) => {
      const i = cases.findIndex((c) => c.label.startsWith(prefix));
      return i < 0 ? undefined : median(rates[i]!.ours) / median(rates[i]!.peer);
    };
    const ceiling = ratioOf('reference: nginx');
    const plain8 = ratioOf('RFC 5019 (no nonce), 8 at a time (`ab -c 8`)');
    const nonce8 = ratioOf('with a nonce, 8 at a time (`ab -c 8`)');
    const costRatio = (acc: typeof cpu.nonce) => (acc.ours.n ? acc.peer.cpu / acc.ours.cpu : undefined);
    const [nonceCost, plainCost] = [costRatio(cpu.nonce), costRatio(cpu.plain)];
    // The floor of an answer with a nonce, in this run: a connection as nginx handles it, plus one ECDSA P-256
    // signature as \`openssl speed\` makes it.
    const perAnswer = (acc: { cpu: number; n: number }) => (acc.n ? (acc.cpu / acc.n) * 1e6 : undefined);
    const [connection, nonceAnswer] = [perAnswer(cpu.constant.ours), perAnswer(cpu.nonce.ours)];
    const signature = 1e6 / (opensslSpeed('ecdsap256', spawnSync)[0] ?? NaN);
    const floorText =
      connection !== undefined && nonceAnswer !== undefined
        ? ` In this run nginx, answering a constant with no OCSP work, spends ${fmt(connection, 1)} µs per request (its
reference row), and one signature takes ${fmt(signature, 1)} µs (\`openssl speed\`): \`mtls ca ocsp\` spends ${fmt(nonceAnswer, 1)} µs
per answer with a nonce, ${fmt(nonceAnswer - signature, 1)} µs of it besides the signature, ${nonceAnswer - signature <= connection ? 'less' : 'more'} than nginx spends on a connection alone.`
        : '';
    const ceilingText =
      ceiling !== undefined && plain8 !== undefined && nonce8 !== undefined
        ? `nginx answering a constant, with no OCSP work at all, does ${fmt(ceiling, 2)}x \`openssl ocsp\` in this run (its
reference row), and \`mtls ca ocsp\` ${fmt(plain8, 2)}x without a nonce and ${fmt(nonce8, 2)}x with one, 8 at a time: at this
rate the TCP connection, not the answer, is most of the cost on these 2 cores, and ab takes one of them (its own ~45 µs
per request caps what it can measure near 22,000/s).${
            nonceCost !== undefined && plainCost !== undefined
              ? ` What an answer costs the responder itself, its process's CPU from /proc (the "server CPU" rows): \`openssl ocsp\`
spends ${fmt(nonceCost, 2)}x the CPU of \`mtls ca ocsp\` per answer with a nonce, and ${fmt(plainCost, 2)}x without one. With a nonce the
floor is one ECDSA P-256 signature plus the kernel's work for a TCP connection.${floorText}`
              : ''
          }`
        : 'install nginx for the reference row: what a new connection per request costs here, with no OCSP work.';
    return `## Revocation at ${fmt(REVOKED)} revoked certificates

\`mtls revoke\` does in one step what a CRL-publishing CA must: it updates the inventory and writes a complete,
signed CRL of every revoked, unexpired certificate (${fmt(REVOKED)} + the new ones), inside one SQLite transaction.
A revocation appends its entry to the CRL published last when that file is exactly the last publication (its
number, issuer and entry count agree with the inventory), so it neither reads the ${fmt(REVOKED)} rows nor encodes
them again; expired entries drop out at the next complete publication (\`mtls ca crl\`, due within the CRL's
lifetime). The peer is \`openssl ca -gencrl\` over an index.txt of the same ${fmt(REVOKED)} entries, which only writes
the CRL (one process each, start-up included). ${ROUNDS} rounds, medians. OCSP: the same request POSTed
${fmt(AB ? AB_REQUESTS : OCSP_REQUESTS)} times${AB ? ' by `ab` (apache2-utils, a C client in its own process)' : ''}, to \`mtls ca ocsp\` (native engine, the default) and to
\`openssl ocsp -index\` (reading the same ${fmt(REVOKED)}-line index), each in its own process, signed by the same responder
key; 3 interleaved rounds, medians. A request with a nonce (as \`openssl ocsp\` and mtlskit's clients send) is signed
afresh by both; one without (RFC 5019) \`mtls ca ocsp\` answers with the answer it signed for the first such request
(until the next revocation, or half its 1 h lifetime), which \`openssl ocsp\` signs afresh. \`openssl ocsp\` closes each
connection, so \`ab -k\` gains it nothing.

| what | mtlskit | openssl | mtlskit's advantage (>1: mtlskit better) |
|---|---:|---:|---:|
| \`revoke()\`: inventory + CRL with the new entry, signed and written, ms (lower is better; median of ${REVOKE_ROUNDS}, fastest ${fmt(Math.min(...ours), 1)}, slowest ${fmt(Math.max(...ours), 1)}) | ${fmt(o, 1)} | ${fmt(p)} | ${fmt(p / o, 1)} |
| a complete CRL from the inventory (\`mtls ca crl\`), ms (lower is better) | ${fmt(median(full))} | ${fmt(p)} | ${fmt(p / median(full), 2)} |
| \`mtls revoke\` command, start-up included, ms (an empty \`node -e ''\` takes ${fmt(median(floor))} ms) | ${fmt(median(cli))} | | |
| CRL size, bytes | ${fmt(crlBytes)} | ${fmt(peerBytes)} | ${fmt(peerBytes / crlBytes, 2)} |
${ocspRows}

Server CPU per full mTLS handshake with the CRLs of these ${fmt(REVOKED)} revoked certificates loaded (\`--crl\`), beside
the same server without them (the issue's target: at most 1.05x). ${HS_ROUNDS} rounds of ${fmt(HS_BLOCK)} sequential
handshakes per server, each server back to back with its twin (the twin first every other round); CPU of the server's
process from /proc; medians of the CPU, and the median of the ratios within a round. The proxies relay a 2-byte echo;
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
Where a revocation's time goes at this size (measured inside one, in ms, on a quiet machine): counting the entries
of the last CRL (5 MB), appending the entry and signing it piece by piece, 4-10; crl.pem 1-2 (its lines around
the unchanged entries are taken from the published file, which must be the one the last publication wrote: same
inode, size, times and last 512 octets); writing and fsyncing the files 10; the renames and the commit 5-6. That
is 20-35 ms. Both files are read in 256 KiB pieces into one buffer the process keeps, never whole: on these VMs,
memory touched for the first time costs ~3 ms per MB, and reading both files whole made the first revocation of a
process 81-106 ms (45-63 now; it still warms up SQLite's cache and the code, so it is usually the slowest above).
The version before took ~130 ms: it copied the 5 MB of entries three times and encoded the 6.6 MB PEM afresh;
the first version took 2.5 s, reading and encoding all 100,000 rows.
OCSP: a new TCP connection per request costs more than the answer itself: ${ceilingText} Where the client keeps
its connection (\`ab -k\`), \`openssl ocsp\` cannot follow, as it closes each. The native front of \`mtls ca ocsp\` (native/answers.cc) answers in native code any request it has
answered before: the whole answer without a nonce, and with one the kept parts signed again (an ECDSA signature,
~18 µs by \`openssl speed\`). A revocation shows in the very next answer: \`mtls revoke\` replaces HOME/crl/.revoked after it commits, and the
front compares it at each request; the inventory's revocation counter is polled every 100 ms for revocations made by
other replicas. The first answer about a certificate is made in Node (parse, inventory lookup, signature, encoding):
the \`--engine node\` row, where every answer is.
Found while measuring: \`openssl ocsp\` as a responder serves one connection at a time with blocking reads, so one
TCP connection that closes without a request (a health probe) stalls it for every client; \`mtls ca ocsp\` bounds
each request (5 s for the head, 10 s in all) and serves others meanwhile.
`;
  } finally {
    child?.kill(); // also when a round failed: a stalled openssl ocsp spins on a CPU
    for (const c of children) c.kill();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
