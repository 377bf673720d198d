/**
 * `mtls proxy server` (native engine, cluster, `--engine node`) against stunnel4, terminating the same mTLS (same certificates, client certificate
 * required and verified) in front of the same plaintext backend, and a direct plaintext connection. Rounds are
 * interleaved (A B A B); medians. Proxy CPU from /proc (whole process tree).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { fileURLToPath } from 'node:url';
import { benchPki, fmt, freePort, median, opensslAeadSpeed, treeCpuSeconds, treeRss, waitForPort } from './lib.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const BIN = path.resolve(HERE, '../../bin/mtls.js');
const STUNNEL = ['/usr/bin/stunnel4', '/usr/bin/stunnel'].find((p) => fs.existsSync(p));
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const HANDSHAKES = Number(process.env['BENCH_PROXY_HANDSHAKES'] ?? 300);
const STREAM_BYTES = 256 * 1024 * 1024;
const PARALLEL = 16;
const PINGS = 5000;
const HS_BLOCK = 50;
const IDLE = 2000;

interface Peer {
  name: string;
  port: number;
  child?: ChildProcess;
  tls: boolean;
}

type Connect = () => net.Socket;

function connector(peer: Peer, ctx: tls.SecureContext, session?: () => Buffer | undefined): Connect {
  return () =>
    peer.tls
      ? tls.connect({
          host: '127.0.0.1',
          port: peer.port,
          secureContext: ctx,
          servername: 'localhost',
          ...(session?.() ? { session: session() } : {}),
        })
      : net.connect(peer.port, '127.0.0.1');
}

const ready = (s: net.Socket) =>
  new Promise<void>((resolve, reject) => {
    s.once(s instanceof tls.TLSSocket ? 'secureConnect' : 'connect', () => resolve());
    s.once('error', reject);
  });

/** Full handshakes: new connection, one 2-byte echo, close, 2 at a time. Returns the wall seconds taken. */
async function handshakes(connect: Connect, n: number): Promise<number> {
  const t0 = process.hrtime.bigint();
  let left = n;
  const one = async () => {
    const s = connect();
    await ready(s);
    s.setNoDelay(true);
    await new Promise<void>((resolve, reject) => {
      let got = 0;
      s.on('data', (d: Buffer) => {
        got += d.length;
        if (got >= 2) {
          s.end();
          resolve();
        }
      });
      s.on('error', reject);
      s.write('Ex');
    });
    s.destroy();
  };
  await Promise.all(
    Array.from({ length: 2 }, async () => {
      while (left-- > 0) await one();
    }),
  );
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

/** `streams` connections each upload `bytes` and half-close; returns bytes per second over all. */
async function throughput(connect: Connect, streams: number, bytes: number): Promise<number> {
  const chunk = Buffer.alloc(64 * 1024, 7);
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: streams }, async () => {
      const s = connect();
      await ready(s);
      await new Promise<void>((resolve, reject) => {
        let answer = '';
        s.on('data', (d) => (answer += d));
        s.on('end', () =>
          Number(answer) === bytes ? resolve() : reject(new Error(`backend got ${answer.trim()} of ${bytes} bytes`)),
        );
        s.on('error', reject);
        s.write('S');
        let sent = 0;
        const pump = () => {
          while (sent < bytes) {
            const n = Math.min(chunk.length, bytes - sent);
            sent += n;
            if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void s.once('drain', pump);
          }
          s.end();
        };
        pump();
      });
      s.destroy();
    }),
  );
  return (bytes * streams) / (Number(process.hrtime.bigint() - t0) / 1e9);
}

/**
 * Round-trip times (µs) of `n` 64-byte echoes per peer, one connection each, taken in turn (one echo through
 * each peer, then the next): a burst of noise on this shared machine lands on every peer alike.
 */
async function latencies(connects: Connect[], n: number): Promise<number[][]> {
  const sockets = await Promise.all(
    connects.map(async (c) => {
      const s = c();
      await ready(s);
      s.setNoDelay(true);
      return s;
    }),
  );
  const msg = Buffer.alloc(64, 0x61);
  msg[0] = 0x45;
  const echo = (s: net.Socket) =>
    new Promise<number>((resolve, reject) => {
      let want = msg.length;
      const t = process.hrtime.bigint();
      const onData = (d: Buffer) => {
        want -= d.length;
        if (want > 0) return;
        s.off('data', onData).off('error', reject);
        resolve(Number(process.hrtime.bigint() - t) / 1e3);
      };
      s.on('data', onData).once('error', reject);
      s.write(msg);
    });
  const out = sockets.map((): number[] => []);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < sockets.length; k++) {
      const at = (i + k) % sockets.length;
      out[at]!.push(await echo(sockets[at]!));
    }
  }
  for (const s of sockets) s.destroy();
  return out;
}

/** Bytes of proxy RSS per idle relayed connection, over `n` connections. */
async function idleMemory(peer: Peer, connect: Connect, n: number): Promise<number> {
  const first = connect();
  await ready(first);
  await new Promise((r) => setTimeout(r, 300));
  const base = treeRss(peer.child!.pid!);
  const held: net.Socket[] = [first];
  for (let i = 1; i < n; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, n - i) }, async () => {
        const s = connect();
        await ready(s);
        // one echo proves the connection reached the backend through the proxy
        await new Promise<void>((resolve) => {
          s.once('data', () => resolve());
          s.write('E');
        });
        held.push(s);
      }),
    );
  }
  await new Promise((r) => setTimeout(r, 500));
  const per = (treeRss(peer.child!.pid!) - base) / (n - 1);
  for (const s of held) s.destroy();
  await new Promise((r) => setTimeout(r, 500));
  return per;
}

const pct = (xs: number[], p: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;

export async function proxySection(): Promise<string> {
  if (!STUNNEL)
    return '## Proxy vs stunnel\n\nstunnel4 is not installed: no proxy figures in this run (`.ci/run` installs it).\n';
  const { dir, file: f, clientContext: ctx } = await benchPki('mtls-proxy-bench-');
  const children: ChildProcess[] = [];
  try {
    const backendPort = await freePort();
    const backend = spawn(process.execPath, [path.join(HERE, 'backend.js'), String(backendPort)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    children.push(backend);
    await new Promise<void>((r) => backend.stdout!.once('data', () => r()));

    // mtls proxy server processes: the default (the native engine), the cluster, and Node's TLS socket.
    const startMtls = async (name: string, extra: string[]): Promise<Peer> => {
      const peer: Peer = { name, port: await freePort(), tls: true };
      peer.child = spawn(
        process.execPath,
        [
          BIN,
          'proxy',
          'server',
          '--listen',
          `127.0.0.1:${peer.port}`,
          '--target',
          `127.0.0.1:${backendPort}`,
          '--cert',
          f('server.crt'),
          '--key',
          f('server.key'),
          '--ca',
          f('ca.crt'),
          '--allow',
          'trust-domain:bench.example',
          '--log-level',
          'warn',
          '--max-connections',
          '20000',
          ...extra,
        ],
        { stdio: 'ignore' },
      );
      children.push(peer.child);
      return peer;
    };
    const ours = await startMtls('mtls proxy server', []);
    const cluster = await startMtls('mtls proxy server --workers 2', ['--workers', '2']);
    const onNode = await startMtls('mtls proxy server --engine node', ['--engine', 'node']);
    const stunnel: Peer = { name: 'stunnel4', port: await freePort(), tls: true };
    fs.writeFileSync(
      f('stunnel.conf'),
      `foreground = yes\npid =\ndebug = 3\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n[svc]\naccept ` +
        `= 127.0.0.1:${stunnel.port}\nconnect = 127.0.0.1:${backendPort}\ncert = ${f('server.crt')}\nkey ` +
        `= ${f('server.key')}\nCAfile = ${f('ca.crt')}\nverifyChain = yes\nrequireCert = yes\n`,
    );
    stunnel.child = spawn(STUNNEL, [f('stunnel.conf')], { stdio: 'ignore' });
    children.push(stunnel.child);
    // Node's TLS server piping to the backend, nothing else: the floor of any proxy on Node's TLS socket.
    const floor: Peer = { name: 'bare Node TLS relay', port: await freePort(), tls: true };
    floor.child = spawn(
      process.execPath,
      [
        path.join(HERE, 'node-relay.js'),
        String(floor.port),
        String(backendPort),
        f('server.crt'),
        f('server.key'),
        f('ca.crt'),
      ],
      { stdio: 'ignore' },
    );
    children.push(floor.child);
    const direct: Peer = { name: 'direct (plaintext, no proxy)', port: backendPort, tls: false };
    const peers = [ours, cluster, stunnel, onNode];
    await Promise.all([...peers, floor].map((p) => waitForPort(p.port)));

    const r = new Map<
      string,
      { hs: number[]; cpu: number[]; one: number[]; oneCpu: number[]; many: number[]; p50: number[]; p99: number[] }
    >();
    for (const p of [...peers, floor, direct])
      r.set(p.name, { hs: [], cpu: [], one: [], oneCpu: [], many: [], p50: [], p99: [] });
    for (const p of [...peers, floor]) await handshakes(connector(p, ctx), 30); // warm-up
    // Memory first, while the heaps hold no garbage from bulk transfers (a later GC would shrink the baseline).
    const mem = new Map<string, number>();
    for (const p of peers) mem.set(p.name, await idleMemory(p, connector(p, ctx), IDLE));
    const all = [...peers, floor, direct];
    for (let round = 0; round < ROUNDS; round++) {
      // Handshakes in blocks of HS_BLOCK per peer, peers in turn, each round starting with a different peer.
      const order = [...all.slice(round % all.length), ...all.slice(0, round % all.length)];
      const secs = new Map(all.map((p) => [p.name, 0]));
      const cpu = new Map(all.map((p) => [p.name, 0]));
      for (let done = 0; done < HANDSHAKES; done += HS_BLOCK) {
        for (const p of order) {
          const cpu0 = p.child ? treeCpuSeconds(p.child.pid!) : 0;
          secs.set(p.name, secs.get(p.name)! + (await handshakes(connector(p, ctx), HS_BLOCK)));
          if (p.child) cpu.set(p.name, cpu.get(p.name)! + treeCpuSeconds(p.child.pid!) - cpu0);
        }
      }
      for (const p of order) {
        const m = r.get(p.name)!;
        const n = Math.ceil(HANDSHAKES / HS_BLOCK) * HS_BLOCK;
        m.hs.push(n / secs.get(p.name)!);
        if (p.child) m.cpu.push((cpu.get(p.name)! / n) * 1000);
        const cpu1 = p.child ? treeCpuSeconds(p.child.pid!) : 0;
        m.one.push(await throughput(connector(p, ctx), 1, STREAM_BYTES));
        if (p.child) m.oneCpu.push((treeCpuSeconds(p.child.pid!) - cpu1) / (STREAM_BYTES / 1e9));
        m.many.push(await throughput(connector(p, ctx), PARALLEL, STREAM_BYTES / PARALLEL));
      }
      const lat = await latencies(
        order.map((p) => connector(p, ctx)),
        PINGS,
      );
      order.forEach((p, k) => {
        r.get(p.name)!.p50.push(pct(lat[k]!, 0.5));
        r.get(p.name)!.p99.push(pct(lat[k]!, 0.99));
      });
      process.stderr.write(`proxy round ${round + 1}/${ROUNDS} done\n`);
    }
    const aead = opensslAeadSpeed('aes-256-gcm', spawnSync);

    const row = (name: string) => {
      const m = r.get(name)!;
      return {
        hs: median(m.hs),
        cpu: m.cpu.length ? median(m.cpu) : NaN,
        one: median(m.one),
        oneCpu: m.oneCpu.length ? median(m.oneCpu) : NaN,
        many: median(m.many),
        p50: median(m.p50),
        p99: median(m.p99),
      };
    };
    const a = row(ours.name);
    const c = row(cluster.name);
    const b = row(stunnel.name);
    const d = row(direct.name);
    const e = row(floor.name);
    const n = row(onNode.name);
    const gb = (x: number) => fmt(x / 1e9, 2);
    const ratio = (x: number, y: number) => fmt(x / y, 2);
    return `## Proxy: \`mtls proxy server\` vs stunnel4

Both terminate the same mTLS (TLS 1.3, ECDSA P-256 chains, client certificate required and verified against the
same CA) in front of the same plaintext backend (its own process), with TCP_NODELAY on both sides; "direct" is
a plaintext connection to the backend. ${ROUNDS} rounds, medians; within a round the peers take turns at a fine grain
(handshakes in blocks of ${HS_BLOCK} connections, echoes one at a time through each peer, one transfer each), so that a
burst of noise on this shared machine hits every peer alike. The client driver runs on the same 2 cores. Ratios: higher is better for mtlskit except where noted.

| figure | mtls proxy (1 process) | mtls proxy --workers 2 | stunnel4 | mtls / stunnel (1 process) | mtls / stunnel (2 workers) | direct |
|---|---:|---:|---:|---:|---:|---:|
| new connections / s (full mTLS handshake + 2-byte echo, 2 at a time) | ${fmt(a.hs)} | ${fmt(c.hs)} | ${fmt(b.hs)} | ${ratio(a.hs, b.hs)} | ${ratio(c.hs, b.hs)} | ${fmt(d.hs)} |
| proxy CPU ms per connection (lower is better; ratio inverted) | ${fmt(a.cpu, 2)} | ${fmt(c.cpu, 2)} | ${fmt(b.cpu, 2)} | ${ratio(b.cpu, a.cpu)} | ${ratio(b.cpu, c.cpu)} | |
| one stream upload, GB/s | ${gb(a.one)} | ${gb(c.one)} | ${gb(b.one)} | ${ratio(a.one, b.one)} | ${ratio(c.one, b.one)} | ${gb(d.one)} |
| proxy CPU seconds per GB of the one-stream upload (lower is better; ratio inverted) | ${fmt(a.oneCpu, 2)} | ${fmt(c.oneCpu, 2)} | ${fmt(b.oneCpu, 2)} | ${ratio(b.oneCpu, a.oneCpu)} | ${ratio(b.oneCpu, c.oneCpu)} | |
| ${PARALLEL} parallel streams, GB/s total | ${gb(a.many)} | ${gb(c.many)} | ${gb(b.many)} | ${ratio(a.many, b.many)} | ${ratio(c.many, b.many)} | ${gb(d.many)} |
| echo round trip p50, µs (lower is better; ratio inverted) | ${fmt(a.p50)} | ${fmt(c.p50)} | ${fmt(b.p50)} | ${ratio(b.p50, a.p50)} | ${ratio(b.p50, c.p50)} | ${fmt(d.p50)} |
| echo round trip p99, µs (lower is better; ratio inverted) | ${fmt(a.p99)} | ${fmt(c.p99)} | ${fmt(b.p99)} | ${ratio(b.p99, a.p99)} | ${ratio(b.p99, c.p99)} | ${fmt(d.p99)} |
| latency added over direct, p50 / p99 µs | ${fmt(a.p50 - d.p50)} / ${fmt(a.p99 - d.p99)} | ${fmt(c.p50 - d.p50)} / ${fmt(c.p99 - d.p99)} | ${fmt(b.p50 - d.p50)} / ${fmt(b.p99 - d.p99)} | | | |
| proxy RSS per idle relayed connection, KiB (${IDLE} connections; lower is better; ratio inverted) | ${fmt(mem.get(ours.name)! / 1024, 1)} | ${fmt(mem.get(cluster.name)! / 1024, 1)} | ${fmt(mem.get(stunnel.name)! / 1024, 1)} | ${ratio(mem.get(stunnel.name)!, mem.get(ours.name)!)} | ${ratio(mem.get(stunnel.name)!, mem.get(cluster.name)!)} | |

The AES-256-GCM limit of one core (\`openssl speed -evp aes-256-gcm\`, 16 KiB blocks): **${gb(aead)} GB/s**; one proxied
stream needs the client to encrypt and the proxy to decrypt every byte on these 2 cores, so ${gb(aead / 2)} GB/s is a
ceiling for one stream here. stunnel uses a thread per connection (both cores); \`--workers 2\` is mtlskit's
cluster (the primary process adds its own RSS to the memory row).

\`mtls proxy server\` runs TCP mode on its native engine (native/: TLS and relay on a thread per core with
the OpenSSL inside Node; one thread per worker with \`--workers 2\`); both mtls columns above are that engine.

### The engines: native, Node's TLS socket, and a bare Node relay

The same rounds, through \`mtls proxy server --engine node\` (Node's TLS socket with mtlskit's relay,
src/proxy/bulk.ts) and a bare Node TLS relay (\`bench/node-relay.ts\`: Node's TLS server with the same certificates
and client-certificate verification, piping each connection to the backend, with no identity, policy, metrics,
limits or logs: the floor of any proxy on Node's TLS socket). "--engine node / stunnel" is what the proxy measured
before the native engine; "bare Node / stunnel" shows that the gap was Node's socket, not mtlskit's work.

| figure | mtls proxy (native) | mtls proxy --engine node | bare Node TLS relay | stunnel4 | native / stunnel | --engine node / stunnel | bare Node / stunnel |
|---|---:|---:|---:|---:|---:|---:|---:|
| new connections / s | ${fmt(a.hs)} | ${fmt(n.hs)} | ${fmt(e.hs)} | ${fmt(b.hs)} | ${ratio(a.hs, b.hs)} | ${ratio(n.hs, b.hs)} | ${ratio(e.hs, b.hs)} |
| proxy CPU ms per connection (lower is better; ratios inverted) | ${fmt(a.cpu, 2)} | ${fmt(n.cpu, 2)} | ${fmt(e.cpu, 2)} | ${fmt(b.cpu, 2)} | ${ratio(b.cpu, a.cpu)} | ${ratio(b.cpu, n.cpu)} | ${ratio(b.cpu, e.cpu)} |
| one stream upload, GB/s | ${gb(a.one)} | ${gb(n.one)} | ${gb(e.one)} | ${gb(b.one)} | ${ratio(a.one, b.one)} | ${ratio(n.one, b.one)} | ${ratio(e.one, b.one)} |
| proxy CPU seconds per GB of the one-stream upload (lower is better; ratios inverted) | ${fmt(a.oneCpu, 2)} | ${fmt(n.oneCpu, 2)} | ${fmt(e.oneCpu, 2)} | ${fmt(b.oneCpu, 2)} | ${ratio(b.oneCpu, a.oneCpu)} | ${ratio(b.oneCpu, n.oneCpu)} | ${ratio(b.oneCpu, e.oneCpu)} |
| ${PARALLEL} parallel streams, GB/s total | ${gb(a.many)} | ${gb(n.many)} | ${gb(e.many)} | ${gb(b.many)} | ${ratio(a.many, b.many)} | ${ratio(n.many, b.many)} | ${ratio(e.many, b.many)} |
| echo round trip p50, µs (lower is better; ratios inverted) | ${fmt(a.p50)} | ${fmt(n.p50)} | ${fmt(e.p50)} | ${fmt(b.p50)} | ${ratio(b.p50, a.p50)} | ${ratio(b.p50, n.p50)} | ${ratio(b.p50, e.p50)} |
| echo round trip p99, µs (lower is better; ratios inverted) | ${fmt(a.p99)} | ${fmt(n.p99)} | ${fmt(e.p99)} | ${fmt(b.p99)} | ${ratio(b.p99, a.p99)} | ${ratio(b.p99, n.p99)} | ${ratio(b.p99, e.p99)} |
| proxy RSS per idle relayed connection, KiB (lower is better; ratios inverted) | ${fmt(mem.get(ours.name)! / 1024, 1)} | ${fmt(mem.get(onNode.name)! / 1024, 1)} | | ${fmt(mem.get(stunnel.name)! / 1024, 1)} | ${ratio(mem.get(stunnel.name)!, mem.get(ours.name)!)} | ${ratio(mem.get(stunnel.name)!, mem.get(onNode.name)!)} | |
`;
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 300));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
