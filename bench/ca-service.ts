/**
 * The CA as a service (issue 15): certificates per second through `POST /v1/sign` (a CSR and a token each, HTTPS,
 * 16 clients at a time on kept-alive connections) from `mtls ca serve` on SQLite and on PostgreSQL, one replica and
 * two, beside in-process issuance for the same CSRs in the same run; and renewal latency over mTLS (a new
 * connection each, as an agent makes it), p50 and p99.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { CertificateAuthority } from '../src/ca/authority.js';
import { makeToken, provisionerKey, tokenAudience } from '../src/ca/tokens.js';
import { createCsr, parseCsr } from '../src/pki/csr.js';
import { buildName } from '../src/pki/names.js';
import { exportPrivateKey, generateKeyPair } from '../src/pki/keys.js';
import { OID } from '../src/pki/oid.js';
import { encodePem } from '../src/pki/pem.js';
import { checkLeafNames } from '../src/pki/profiles.js';
import { clientTlsOptions } from '../src/tls/options.js';
import { loadCredentials } from '../src/tls/credentials.js';
import { fmt, freePort, median } from './lib.js';

const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/mtls.js');
const PER_ROUND = 300;
const ROUNDS = 3;
const CONCURRENCY = 16;
const RENEWALS = 200;

interface Request {
  csr: string;
  key: string;
  token: string;
}

function csrFor(name: string): { csr: string; key: string } {
  const { privateKey } = generateKeyPair('ec-p256');
  const subject = buildName([{ oid: OID.commonName, value: name }]);
  return { csr: encodePem('CERTIFICATE REQUEST', createCsr(privateKey, subject)), key: exportPrivateKey(privateKey) };
}

async function requests(ca: CertificateAuthority, tag: string, n: number): Promise<Request[]> {
  const key = provisionerKey(ca.home, true);
  const aud = tokenAudience(ca.root.fingerprint256);
  const out: Request[] = [];
  for (let i = 0; i < n; i++) {
    const name = `${tag}-${i}`;
    const grant = {
      name,
      profile: 'spiffe' as const,
      names: checkLeafNames('spiffe', { spiffeId: `spiffe://bench.example/${name}` }),
      validityMs: 3600e3,
    };
    out.push({ ...csrFor(name), token: await makeToken(key, aud, grant, 3600e3) });
  }
  return out;
}

function post(url: string, body: unknown, o: https.RequestOptions): Promise<{ status: number; json: any }> {
  const data = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      { ...o, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': data.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (d: Buffer) => chunks.push(d));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString()) }),
        );
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

/** Certificates per second for `reqs`, spread over the replicas' URLs, CONCURRENCY at a time. */
async function apiRate(urls: string[], root: string, reqs: Request[]): Promise<number> {
  const agents = urls.map(() => new https.Agent({ keepAlive: true, maxSockets: CONCURRENCY }));
  const tls = clientTlsOptions(undefined, root);
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, w) => {
      for (let i = next++; i < reqs.length; i = next++) {
        const r = reqs[i]!;
        const a = await post(
          `${urls[(i + w) % urls.length]}/v1/sign`,
          { csr: r.csr, token: r.token },
          {
            ...tls,
            agent: agents[(i + w) % urls.length],
          },
        );
        if (a.status !== 201) throw new Error(`sign: HTTP ${a.status} ${JSON.stringify(a.json)}`);
      }
    }),
  );
  const rate = reqs.length / (Number(process.hrtime.bigint() - t0) / 1e9);
  for (const a of agents) a.destroy();
  return rate;
}

/** In-process: ca.issue for the same kind of request (the CSR's key, the token's names), one after another. */
async function inProcessRate(ca: CertificateAuthority, reqs: Request[]): Promise<number> {
  const t0 = process.hrtime.bigint();
  for (const [i, r] of reqs.entries()) {
    await ca.issue({
      profile: 'spiffe',
      name: `inproc-${i}-${Date.now()}`.slice(0, 60),
      names: { spiffeId: `spiffe://bench.example/inproc-${i}-${process.hrtime.bigint()}` },
      validityMs: 3600e3,
      publicKey: parseCsr(Buffer.from(r.csr)).publicKey,
    });
  }
  return reqs.length / (Number(process.hrtime.bigint() - t0) / 1e9);
}

async function startService(home: string, store: string[]): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const log = path.join(home, `..`, `serve-${port}.log`);
  const fd = fs.openSync(log, 'w');
  const child = spawn(
    process.execPath,
    [
      // MTLS_BENCH_PROFILE=DIR: a CPU profile of each replica, written there when it stops (SIGTERM).
      ...(process.env['MTLS_BENCH_PROFILE']
        ? ['--cpu-prof', `--cpu-prof-dir=${process.env['MTLS_BENCH_PROFILE']}`]
        : []),
      BIN,
      'ca',
      'serve',
      '--listen',
      `127.0.0.1:${port}`,
      '--home',
      home,
      ...store,
    ],
    {
      stdio: ['ignore', 'ignore', fd],
    },
  );
  fs.closeSync(fd);
  const deadline = Date.now() + 30_000;
  while (!/CA service on/.test(fs.readFileSync(log, 'utf8'))) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`mtls ca serve: ${fs.readFileSync(log, 'utf8')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { url: `https://127.0.0.1:${port}`, child };
}

/** A throwaway PostgreSQL (as the tests' .ci/run makes one), or undefined when it cannot run here. */
function startPostgres(): { url: string; stop: () => void } | undefined {
  if (process.env['MTLS_TEST_POSTGRES']) return { url: process.env['MTLS_TEST_POSTGRES'], stop: () => {} };
  const bin = fs.existsSync('/usr/lib/postgresql')
    ? fs
        .readdirSync('/usr/lib/postgresql')
        .sort()
        .map((v) => `/usr/lib/postgresql/${v}/bin`)
        .at(-1)
    : undefined;
  if (!bin || process.getuid?.() !== 0) return undefined;
  // A directory of its own that the postgres user can reach (the bench's own is 0700, with the CA's keys in it).
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-bench-pg-'));
  fs.chmodSync(data, 0o755);
  spawnSync('chown', ['postgres', data]);
  const as = (cmd: string) => spawnSync('su', ['postgres', '-s', '/bin/sh', '-c', cmd], { encoding: 'utf8' });
  if (as(`${bin}/initdb -D ${data}/d -A trust -U postgres`).status !== 0) return undefined;
  const port = 50000 + Math.floor(Math.random() * 10000);
  const r = as(
    `${bin}/pg_ctl -D ${data}/d -o '-p ${port} -k ${data} -c listen_addresses=127.0.0.1' -l ${data}/log -w start`,
  );
  if (r.status !== 0) return undefined;
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => {
      as(`${bin}/pg_ctl -D ${data}/d -m immediate stop`);
      fs.rmSync(data, { recursive: true, force: true });
    },
  };
}

async function database(base: string, name: string): Promise<string> {
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}

/** The machine's busy and total CPU time so far (/proc/stat, all cores), in clock ticks. */
function machineCpu(): { busy: number; total: number } {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0); // idle + iowait
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** CPU seconds a process has used so far (/proc/PID/stat utime + stime), 0 when it is gone. */
function processCpuS(pid: number | undefined): number {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // fields 14 and 15, in clock ticks (USER_HZ 100)
  } catch {
    return 0;
  }
}

/** Sequential renewals over mTLS, a new connection each: latencies in ms. */
async function renewalLatencies(
  url: string,
  root: string,
  holders: { cert: string; key: string }[],
): Promise<number[]> {
  const out: number[] = [];
  for (const h of holders) {
    const creds = loadCredentials({ cert: h.cert, key: h.key, ca: root });
    const c = csrFor('renew');
    const t0 = process.hrtime.bigint();
    const a = await post(`${url}/v1/renew`, { csr: c.csr }, { ...clientTlsOptions(creds, root), agent: false });
    out.push(Number(process.hrtime.bigint() - t0) / 1e6);
    if (a.status !== 201) throw new Error(`renew: HTTP ${a.status} ${JSON.stringify(a.json)}`);
  }
  return out.sort((x, y) => x - y);
}

export async function caServiceSection(): Promise<string> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-bench-ca-service-'));
  const children: ChildProcess[] = [];
  const pgServer = startPostgres();
  try {
    const home = path.join(dir, 'ca');
    const ca = await CertificateAuthority.init({ home, name: 'Bench', trustDomain: 'bench.example' });
    const root = ca.bundlePem;
    const rows = new Map<string, number[]>();
    const add = (k: string, v: number) => rows.set(k, [...(rows.get(k) ?? []), v]);
    const configs: { name: string; store: () => Promise<string[]>; replicas: number }[] = [
      { name: 'sqlite-1', store: async () => [], replicas: 1 },
      { name: 'sqlite-2', store: async () => [], replicas: 2 },
      ...(pgServer
        ? [
            {
              name: 'pg-1',
              store: async () => ['--store', await database(pgServer.url, `bench_${Date.now()}_1`)],
              replicas: 1,
            },
            {
              name: 'pg-2',
              store: async () => ['--store', await database(pgServer.url, `bench_${Date.now()}_2`)],
              replicas: 2,
            },
          ]
        : []),
    ];
    let holders: { cert: string; key: string }[] = [];
    let renewUrl = '';
    const services: { name: string; urls: string[]; pids: (number | undefined)[] }[] = [];
    for (const c of configs) {
      const store = await c.store();
      const urls: string[] = [];
      const pids: (number | undefined)[] = [];
      for (let i = 0; i < c.replicas; i++) {
        const s = await startService(home, store);
        children.push(s.child);
        urls.push(s.url);
        pids.push(s.child.pid);
      }
      services.push({ name: c.name, urls, pids });
    }
    for (let round = 0; round < ROUNDS; round++) {
      const inproc = await requests(ca, `in${round}`, PER_ROUND);
      add('inproc', await inProcessRate(ca, inproc));
      for (const s of services) {
        const reqs = await requests(ca, `${s.name}${round}`, PER_ROUND);
        const before = machineCpu();
        const client = process.cpuUsage();
        const replicasBefore = s.pids.map(processCpuS);
        const t0 = process.hrtime.bigint();
        const rate = await apiRate(s.urls, root, reqs);
        const wallUs = Number(process.hrtime.bigint() - t0) / 1e3;
        const used = process.cpuUsage(client);
        const after = machineCpu();
        add(s.name, rate);
        add(`${s.name}-busy`, (after.busy - before.busy) / Math.max(1, after.total - before.total));
        add(`${s.name}-client`, (used.user + used.system) / wallUs);
        const busiest = Math.max(...s.pids.map((p, k) => processCpuS(p) - replicasBefore[k]!));
        add(`${s.name}-replica`, busiest / (wallUs / 1e6));
        process.stderr.write(
          `ca service round ${round}: ${s.name} ${fmt(rate)}/s, in-process ${fmt(rows.get('inproc')!.at(-1)!)}/s\n`,
        );
      }
    }
    // Renewal latency: certificates from the first service, renewed one after another.
    renewUrl = services[0]!.urls[0]!;
    const reqs = await requests(ca, 'renew', RENEWALS);
    for (const r of reqs) {
      const a = await post(
        `${renewUrl}/v1/sign`,
        { csr: r.csr, token: r.token },
        { ...clientTlsOptions(undefined, root), agent: false },
      );
      holders.push({ cert: a.json.certificate, key: r.key });
    }
    const lat = await renewalLatencies(renewUrl, root, holders);
    holders = [];
    await ca.close();
    const inproc = median(rows.get('inproc')!);
    const row = (name: string, label: string) =>
      rows.has(name)
        ? `| ${label} | ${fmt(median(rows.get(name)!))} | ${fmt(inproc)} | ${fmt(inproc / median(rows.get(name)!), 2)} | ` +
          `${Math.round(median(rows.get(`${name}-busy`)!) * 100)}% | ${fmt(median(rows.get(`${name}-replica`)!), 2)} | ` +
          `${fmt(median(rows.get(`${name}-client`)!), 2)} |`
        : `| ${label} | not measured: no PostgreSQL here | | | | | |`;
    const pgRatio =
      rows.has('pg-1') && rows.has('pg-2') ? fmt(median(rows.get('pg-2')!) / median(rows.get('pg-1')!), 2) : 'n/a';
    const pct = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))]!;
    return `## CA service: issuance through the API, and renewal latency

Certificates per second through \`POST /v1/sign\` (a CSR and a one-time token each; the CSRs and tokens made
beforehand), ${CONCURRENCY} clients at a time on kept-alive HTTPS connections from the bench process, to \`mtls ca
serve\` on SQLite (the CA home's) and on PostgreSQL 15 (one database on this machine), one replica and two; beside
\`ca.issue()\` in-process for the same kind of request (the CSR's key, a SPIFFE ID, inventory write), one after
another. ${ROUNDS} rounds of ${PER_ROUND}, medians. The issue's targets: the API costs at most 2x in-process issuance per
certificate; two replicas on PostgreSQL issue at least 1.5x one replica. This machine has ${os.cpus().length} cores, shared
by the replicas, PostgreSQL and the clients.

| service | certificates / s | in-process / s | API cost per certificate (x in-process; target ≤ 2) | machine CPU busy (all ${os.cpus().length} cores) | cores used by the busiest replica | cores used by the clients (one Node process) |
|---|---:|---:|---:|---:|---:|---:|
${row('sqlite-1', 'one replica, SQLite')}
${row('sqlite-2', 'two replicas, one SQLite inventory')}
${row('pg-1', 'one replica, PostgreSQL')}
${row('pg-2', 'two replicas, PostgreSQL')}

Per certificate, in-process issuance took ${fmt(1000 / inproc, 2)} ms here and one SQLite replica ${rows.has('sqlite-1') ? fmt(1000 / median(rows.get('sqlite-1')!), 2) : 'n/a'} ms of
wall time: the API's own work (HTTPS and JSON, the token's ES256 signature checked through jose and WebCrypto, the
token spent in the same transaction) adds ${rows.has('sqlite-1') ? fmt(1000 / median(rows.get('sqlite-1')!) - 1000 / inproc, 2) : 'n/a'} ms, a fixed cost: the cheaper issuance itself gets, the higher
the ratio, though the API issues more per second.

Two replicas on PostgreSQL issue ${pgRatio}x one replica (target ≥ 1.5). On this machine that cannot show: its
${os.cpus().length} cores are shared by the replicas, PostgreSQL and the load generator, and they are busy ${rows.has('pg-1') ? `${Math.round(median(rows.get('pg-1-busy')!) * 100)}%` : 'n/a'}
of the time with one PostgreSQL replica already, which itself keeps ${rows.has('pg-1') ? fmt(median(rows.get('pg-1-replica')!), 2) : 'n/a'} of a core busy (its JavaScript runs on
one thread). Two replicas would need that much each, beside PostgreSQL and the clients: more cores than this
machine has, so the second replica only competes for the same ones. It needs a machine with cores to spare, or
replicas on other machines.

Renewal over mTLS (\`POST /v1/renew\`: a new TLS connection with the current certificate, a CSR for a new key, the
old certificate marked superseded), ${RENEWALS} one after another on SQLite: p50 ${fmt(pct(0.5), 1)} ms, p99 ${fmt(pct(0.99), 1)} ms.
`;
  } finally {
    for (const c of children) c.kill();
    pgServer?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
