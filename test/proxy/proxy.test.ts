import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { decodeProxyV2, PP2 } from '../../src/proxy/proxy-protocol.js';
import { ProxyMetrics } from '../../src/proxy/metrics.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import {
  close,
  freePort,
  listen,
  testPki,
  tlsAttempt,
  until,
  type TestPki,
  credentialArgs,
} from '../helpers/endpoints.js';
import { BIN, keyPem, makeCert, opensslCrl, tempDir, writePem, type TestCert } from '../helpers/pki.js';
import { OID } from '../../src/pki/oid.js';
import { peerMissing, startNginx, startProcess, startProxy, stopAll } from '../helpers/process.js';

let pki: TestPki;
const servers: net.Server[] = [];
const BILLING = 'spiffe://test.example/ns/prod/sa/billing';

before(async () => {
  pki = await testPki();
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await pki.ca.close();
});

const proxy = startProxy;

/**
 * The engine of the server listeners: 'auto' (native for TCP, as users get it) here; proxy-node-engine.test.ts
 * runs the TCP tests of this file again with 'node'.
 */
const ENGINE = process.env['MTLS_TEST_PROXY_ENGINE'] ?? 'auto';
const NODE_ENGINE_RUN = ENGINE === 'node';

function serverArgs(port: number, target: string, extra: string[] = []): string[] {
  return [
    'server',
    '--listen',
    `127.0.0.1:${port}`,
    '--target',
    target,
    ...credentialArgs(pki),
    '--engine',
    ENGINE,
    ...extra,
  ];
}

function clientArgs(port: number, target: number, who: string, extra: string[] = []): string[] {
  return [
    'client',
    '--listen',
    `127.0.0.1:${port}`,
    '--target',
    `localhost:${target}`,
    '--cert',
    pki.file(`${who}.crt`),
    '--key',
    pki.file(`${who}.key`),
    '--ca',
    pki.file('ca.crt'),
    ...extra,
  ];
}

/** curl without blocking this process (the backends live here). */
function curl(args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn('curl', ['-sS', '--max-time', '10', ...args]);
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    c.on('exit', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/** Polls `get` until `ok` holds for its value (at most 5 s), then returns the value. */
async function eventually<T>(get: () => Promise<T>, ok: (v: T) => boolean): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await get();
    if (ok(v) || Date.now() - t0 > 5000) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function serve(server: net.Server): Promise<number> {
  servers.push(server);
  return listen(server);
}

describe(
  'proxy HTTP mode: curl -> proxy client -> proxy server -> backend',
  { skip: NODE_ENGINE_RUN && 'HTTP mode has one engine: run in proxy.test.ts' },
  () => {
    it(
      'a Node backend sees the caller in XFCC; a spoofed XFCC/Client-Cert is stripped; ' +
        'a denied identity never reaches it',
      async () => {
        const seen: http.IncomingHttpHeaders[] = [];
        const backend = await serve(
          http.createServer((req, res) => {
            seen.push(req.headers);
            res.end(JSON.stringify(req.headers));
          }),
        );
        const [ps, pcBilling, pcWeb] = await Promise.all([freePort(), freePort(), freePort()]);
        await proxy(serverArgs(ps, `127.0.0.1:${backend}`, ['--http', '--client-cert-header', '--allow', BILLING]));
        await proxy(clientArgs(pcBilling, ps, 'billing'));
        await proxy(clientArgs(pcWeb, ps, 'web'));
        const r = await curl([
          '-H',
          'X-Forwarded-Client-Cert: By=x;URI=spiffe://test.example/ns/prod/sa/admin',
          '-H',
          'Client-Cert: :AAAA:',
          `http://127.0.0.1:${pcBilling}/orders?id=1`,
        ]);
        assert.equal(r.status, 0, r.stderr);
        const h = JSON.parse(r.stdout) as Record<string, string>;
        assert.match(
          h['x-forwarded-client-cert']!,
          new RegExp(`^Hash=[0-9a-f]{64};Subject="CN=billing, O=Endpoint Test";URI=${BILLING}$`),
        );
        assert.doesNotMatch(h['x-forwarded-client-cert']!, /admin|By=x/);
        assert.equal(
          Buffer.from(h['client-cert']!.slice(1, -1), 'base64').equals(pki.creds('billing').leaf.der),
          true,
          'RFC 9440 Client-Cert is our verified leaf',
        );
        assert.equal(h['x-forwarded-proto'], 'https');
        const before = seen.length;
        const denied = await curl(['-i', `http://127.0.0.1:${pcWeb}/orders`]);
        assert.match(denied.stdout, /^HTTP\/1\.1 403/);
        assert.match(denied.stdout, /spiffe:\/\/test\.example\/ns\/prod\/sa\/web matches no allow rule/);
        assert.equal(seen.length, before, 'the backend saw nothing from the denied caller');
      },
    );

    it(
      'an nginx backend sees the same XFCC (keep-alive to the backend, several requests)',
      { skip: peerMissing('nginx') },
      async () => {
        const nginxPort = await freePort();
        const dir = tempDir('mtls-nginx-');
        await startNginx(
          dir,
          `server { listen 127.0.0.1:${nginxPort}; location / { return 200 "xfcc=$http_x_forwarded_client_cert\\n"; } }`,
        );
        const [ps, pc] = await Promise.all([freePort(), freePort()]);
        await proxy(serverArgs(ps, `127.0.0.1:${nginxPort}`, ['--http', '--allow', 'trust-domain:test.example']));
        await proxy(clientArgs(pc, ps, 'billing'));
        let r = await curl([`http://127.0.0.1:${pc}/a`, `http://127.0.0.1:${pc}/b`]);
        for (let i = 0; i < 20 && r.status !== 0; i++) {
          await new Promise((x) => setTimeout(x, 100));
          r = await curl([`http://127.0.0.1:${pc}/a`, `http://127.0.0.1:${pc}/b`]);
        }
        assert.equal(r.status, 0, r.stderr);
        const lines = r.stdout.trim().split('\n');
        assert.equal(lines.length, 2);
        for (const l of lines)
          assert.match(l, new RegExp(`^xfcc=Hash=[0-9a-f]{64};Subject="CN=billing, O=Endpoint Test";URI=${BILLING}$`));
      },
    );
  },
);

describe(
  'proxy HTTP mode: upgrades',
  { skip: NODE_ENGINE_RUN && 'HTTP mode has one engine: run in proxy.test.ts' },
  () => {
    it(
      'an upgrade is authorized like a request, then relayed as bytes: 6 MiB each ' +
        'way byte-exact; a denied caller gets 403',
      async () => {
        const SIZE = 6 * 1024 * 1024;
        const up = crypto.randomBytes(SIZE);
        const down = crypto.randomBytes(SIZE);
        let xfcc: string | undefined;
        let backendGot = '';
        const backend = http.createServer((_req, res) => res.end('no upgrade'));
        backend.on('upgrade', (req: http.IncomingMessage, socket: net.Socket) => {
          xfcc = req.headers['x-forwarded-client-cert'] as string | undefined;
          socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: bytes\r\nConnection: Upgrade\r\n\r\n');
          const h = crypto.createHash('sha256');
          socket.on('data', (d: Buffer) => h.update(d));
          socket.on('end', () => {
            backendGot = h.digest('hex');
            socket.end(down);
          });
        });
        const port = await serve(backend);
        const [ps, pcBilling, pcWeb] = await Promise.all([freePort(), freePort(), freePort()]);
        await proxy(serverArgs(ps, `127.0.0.1:${port}`, ['--http', '--allow', BILLING]));
        await proxy(clientArgs(pcBilling, ps, 'billing'));
        await proxy(clientArgs(pcWeb, ps, 'web'));
        /** Sends an upgrade request, then (after a 101) `body` and a half-close; resolves with the status line and the SHA-256 of what followed. */
        const upgrade = (pc: number, body: Buffer) =>
          new Promise<[string, string]>((resolve, reject) => {
            const c = net.connect({ port: pc, host: '127.0.0.1', allowHalfOpen: true });
            c.on('error', reject);
            c.write(`GET /stream HTTP/1.1\r\nHost: backend\r\nConnection: Upgrade\r\nUpgrade: bytes\r\n\r\n`);
            let head = Buffer.alloc(0);
            let status = '';
            const h = crypto.createHash('sha256');
            c.on('data', (d: Buffer) => {
              if (status) return void h.update(d);
              head = Buffer.concat([head, d]);
              const at = head.indexOf('\r\n\r\n');
              if (at < 0) return;
              status = head.subarray(0, head.indexOf('\r\n')).toString();
              h.update(head.subarray(at + 4));
              if (status.includes(' 101 ')) c.end(body);
            });
            c.on('end', () => {
              c.end(); // after a 403 our side is still open (allowHalfOpen)
              resolve([status, h.digest('hex')]);
            });
          });
        const sha = (d: Buffer) => crypto.createHash('sha256').update(d).digest('hex');
        const [status, got] = await upgrade(pcBilling, up);
        assert.match(status, /^HTTP\/1\.1 101 /);
        assert.match(
          xfcc ?? '',
          new RegExp(`URI=${BILLING}$`),
          'the backend saw the caller in XFCC on the upgrade request',
        );
        assert.equal(backendGot, sha(up));
        assert.equal(got, sha(down));
        xfcc = undefined;
        const [deniedStatus] = await upgrade(pcWeb, up);
        assert.match(deniedStatus, /^HTTP\/1\.1 403 /);
        assert.equal(xfcc, undefined, 'a denied upgrade never reached the backend');
      },
    );
  },
);

describe('proxy TCP mode with PROXY protocol v2', () => {
  it('the backend reads the identity TLVs before any payload; a denied identity never connects', async () => {
    const got: { header: ReturnType<typeof decodeProxyV2>; payload: string }[] = [];
    let connections = 0;
    const backend = await serve(
      net.createServer((s) => {
        connections++;
        let buf = Buffer.alloc(0);
        s.on('data', (d: Buffer) => {
          buf = Buffer.concat([buf, d]);
          const h = decodeProxyV2(buf);
          if (!h || buf.length === h.length) return;
          got.push({ header: h, payload: buf.subarray(h.length).toString() });
          s.end(`hello ${h.tlvs.get(PP2.MTLS_SPIFFE_ID)}\n`);
        });
      }),
    );
    const [ps, pcBilling, pcWeb] = await Promise.all([freePort(), freePort(), freePort()]);
    await proxy(serverArgs(ps, `127.0.0.1:${backend}`, ['--proxy-protocol', '--allow', BILLING]));
    await proxy(clientArgs(pcBilling, ps, 'billing'));
    await proxy(clientArgs(pcWeb, ps, 'web'));
    const reply = await new Promise<string>((resolve) => {
      const c = net.connect(pcBilling, '127.0.0.1', () => c.write('ping'));
      let d = '';
      c.on('data', (x) => (d += x));
      c.on('end', () => resolve(d));
    });
    assert.equal(reply, `hello ${BILLING}\n`);
    assert.equal(got[0]!.payload, 'ping');
    const h = got[0]!.header!;
    assert.equal(h.command, 'PROXY');
    assert.equal(h.source!.address, '127.0.0.1');
    assert.equal(h.ssl!.sub.get(PP2.SUBTYPE_SSL_CN)!.toString(), 'billing');
    assert.equal(h.tlvs.get(PP2.MTLS_SUBJECT)!.toString(), 'CN=billing, O=Endpoint Test');
    const before = connections;
    const closed = await new Promise<string>((resolve) => {
      const c = net.connect(pcWeb, '127.0.0.1', () => c.write('ping'));
      let d = '';
      c.on('data', (x) => (d += x));
      c.on('close', () => resolve(d));
    });
    assert.equal(closed, '');
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(connections, before, 'no connection to the backend for a denied identity');
  });

  it(
    'nginx (listen ... proxy_protocol) accepts our PROXY v2 header and sees the real client address',
    { skip: peerMissing('nginx') },
    async () => {
      const nginxPort = await freePort();
      const dir = tempDir('mtls-nginx-');
      await startNginx(
        dir,
        `server { listen 127.0.0.1:${nginxPort} proxy_protocol; location / { return ` +
          `200 "client=$proxy_protocol_addr\\n"; } }`,
      );
      const [ps, pc] = await Promise.all([freePort(), freePort()]);
      await proxy(serverArgs(ps, `127.0.0.1:${nginxPort}`, ['--proxy-protocol', '--allow', BILLING]));
      await proxy(clientArgs(pc, ps, 'billing'));
      let r = await curl([`http://127.0.0.1:${pc}/`]);
      for (let i = 0; i < 20 && r.status !== 0; i++) {
        await new Promise((x) => setTimeout(x, 100));
        r = await curl([`http://127.0.0.1:${pc}/`]);
      }
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'client=127.0.0.1\n');
    },
  );
});

describe('proxy targets and server identity', () => {
  it('a unix socket target; the proxy client refuses a server whose SPIFFE ID is not the expected one', async () => {
    const sock = path.join(tempDir('mtls-unix-'), 'app.sock');
    const backend = http.createServer((_q, s) => s.end('over unix\n'));
    servers.push(backend);
    await new Promise<void>((r) => backend.listen(sock, r));
    const [ps, pcGood, pcBad] = await Promise.all([freePort(), freePort(), freePort()]);
    await proxy([
      'server',
      '--listen',
      `127.0.0.1:${ps}`,
      '--target',
      `unix:${sock}`,
      '--cert',
      pki.file('svid-server.crt'),
      '--key',
      pki.file('svid-server.key'),
      '--ca',
      pki.file('ca.crt'),
      '--http',
      '--allow',
      BILLING,
    ]);
    await proxy(clientArgs(pcGood, ps, 'billing', ['--expect-spiffe-id', 'spiffe://test.example/ns/prod/sa/api']));
    const bad = await proxy(
      clientArgs(pcBad, ps, 'billing', ['--expect-spiffe-id', 'spiffe://test.example/ns/prod/sa/other']),
    );
    const ok = await curl([`http://127.0.0.1:${pcGood}/`]);
    assert.equal(ok.stdout, 'over unix\n', ok.stderr);
    const refused = await curl([`http://127.0.0.1:${pcBad}/`]);
    assert.notEqual(refused.status, 0);
    await until(() => /"code":"SERVER_IDENTITY_MISMATCH"/.test(bad.output()), 5000, 'the refusal in the log');
    assert.match(
      bad.output(),
      /the server is spiffe:\/\/test\.example\/ns\/prod\/sa\/api, not spiffe:\/\/test\.example\/ns\/prod\/sa\/other/,
    );
  });
});

describe('proxy limits and transfers', () => {
  it('large transfers both ways with half-close arrive byte-exact (SHA-256 compared)', async () => {
    const SIZE = 24 * 1024 * 1024;
    const up = crypto.randomBytes(SIZE);
    const down = crypto.randomBytes(SIZE);
    let backendGot = '';
    const backend = await serve(
      net.createServer({ allowHalfOpen: true }, (s) => {
        const h = crypto.createHash('sha256');
        s.on('data', (d) => h.update(d));
        // Only after the client's half-close does the backend answer: the proxy must keep the other way open.
        s.on('end', () => {
          backendGot = h.digest('hex');
          s.end(down);
        });
      }),
    );
    const [ps, pc] = await Promise.all([freePort(), freePort()]);
    await proxy(serverArgs(ps, `127.0.0.1:${backend}`, ['--allow', BILLING]));
    await proxy(clientArgs(pc, ps, 'billing'));
    const received = await new Promise<string>((resolve, reject) => {
      const c = net.connect({ port: pc, host: '127.0.0.1', allowHalfOpen: true }, () => c.end(up));
      const h = crypto.createHash('sha256');
      c.on('data', (d) => h.update(d));
      c.on('end', () => resolve(h.digest('hex')));
      c.on('error', reject);
    });
    assert.equal(backendGot, crypto.createHash('sha256').update(up).digest('hex'));
    assert.equal(received, crypto.createHash('sha256').update(down).digest('hex'));
  });

  it(
    'a client that never finishes its handshake is cut at the handshake timeout; ' + 'the target never hears of it',
    async () => {
      let connections = 0;
      const backend = await serve(
        net.createServer(() => {
          connections++;
        }),
      );
      const ps = await freePort();
      const admin = await freePort();
      await proxy(
        serverArgs(ps, `127.0.0.1:${backend}`, [
          '--allow',
          'any',
          '--handshake-timeout',
          '500ms',
          '--admin',
          `127.0.0.1:${admin}`,
        ]),
      );
      const t0 = Date.now();
      const lasted = await new Promise<number>((resolve) => {
        const c = net.connect(ps, '127.0.0.1', () => c.write(Buffer.from('160301', 'hex'))); // the first bytes of a ClientHello, then silence
        c.on('close', () => resolve(Date.now() - t0));
        c.on('error', () => undefined);
      });
      assert.ok(lasted >= 450 && lasted < 3000, `cut after ${lasted} ms`);
      assert.equal(connections, 0);
      const metrics = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      assert.match(
        metrics,
        /mtls_proxy_handshakes_total\{listener="server",result="failed",reason="HANDSHAKE_TIMEOUT"\} 1/,
      );
    },
  );
});

describe('proxy connection limits: idle timeout, maximum lifetime, maximum connections', () => {
  it('closes an idle connection, ends a busy one at its lifetime, refuses connections past the maximum', async () => {
    const backend = await serve(
      net.createServer((s) => {
        s.on('data', (d) => s.write(d));
        s.on('error', () => undefined);
      }),
    );
    const [idlePort, lifePort, maxPort, admin] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const idle = await proxy(
      serverArgs(idlePort, `127.0.0.1:${backend}`, ['--allow', BILLING, '--idle-timeout', '400ms']),
    );
    const life = await proxy(
      serverArgs(lifePort, `127.0.0.1:${backend}`, ['--allow', BILLING, '--max-lifetime', '800ms']),
    );
    await proxy(
      serverArgs(maxPort, `127.0.0.1:${backend}`, [
        '--allow',
        BILLING,
        '--max-connections',
        '2',
        '--admin',
        `127.0.0.1:${admin}`,
      ]),
    );
    const secureContext = tls.createSecureContext(clientTlsOptions(pki.creds('billing'), pki.bundle));
    const open = (port: number) =>
      new Promise<tls.TLSSocket>((resolve, reject) => {
        const c = tls.connect({ host: '127.0.0.1', port, secureContext, servername: 'localhost' });
        c.once('secureConnect', () => resolve(c));
        c.once('error', reject);
      });
    // resume(): a paused socket with unread echoes would never see the end, nor close.
    const lifetimeOf = (c: tls.TLSSocket, t0: number) =>
      new Promise<number>((resolve) => {
        c.resume();
        c.on('error', () => undefined);
        c.on('close', () => resolve(Date.now() - t0));
      });
    // idle: no byte either way for 400 ms
    const a = await open(idlePort);
    a.write('x');
    const idleFor = await lifetimeOf(a, Date.now());
    assert.ok(idleFor >= 350 && idleFor < 2500, `idle connection closed after ${idleFor} ms`);
    await until(() => /"closed":"idle timeout"/.test(idle.output()), 5000, 'the idle close in the log');
    // lifetime: echoing every 50 ms keeps it busy, and it still ends at 800 ms
    const t0 = Date.now();
    const b = await open(lifePort);
    const tick = setInterval(() => b.write('y'), 50);
    const lived = await lifetimeOf(b, t0);
    clearInterval(tick);
    assert.ok(lived >= 700 && lived < 3000, `busy connection closed after ${lived} ms`);
    await until(() => /"closed":"max lifetime"/.test(life.output()), 5000, 'the lifetime close in the log');
    // maximum connections: the third is dropped at accept
    const held = [await open(maxPort), await open(maxPort)];
    await new Promise((r) => setTimeout(r, 100));
    await assert.rejects(open(maxPort));
    for (const c of held) c.destroy();
    const m = await eventually(
      async () => (await fetch(`http://127.0.0.1:${admin}/metrics`)).text(),
      (t) => /MAX_CONNECTIONS/.test(t),
    );
    assert.match(m, /mtls_proxy_handshakes_total\{listener="server",result="failed",reason="MAX_CONNECTIONS"\} 1/);
  });

  it('per-identity metrics are bounded: past 100 identities the rest count as "other"', () => {
    const metrics = new ProxyMetrics(false);
    const labels = Array.from({ length: 150 }, (_, i) => metrics.identityLabel(`spiffe://td/${i}`));
    assert.equal(new Set(labels).size, 101);
    assert.equal(labels[99], 'spiffe://td/99');
    assert.equal(labels[100], 'other');
    assert.equal(metrics.identityLabel('spiffe://td/5'), 'spiffe://td/5', 'a known identity keeps its label');
  });
});

describe('proxy operations: metrics, health, probes, reload, drain', () => {
  it('/metrics, /healthz, /readyz; a TCP health probe is counted, not logged at info', async () => {
    const backend = await serve(http.createServer((_q, s) => s.end('ok')));
    const [ps, pc, admin] = await Promise.all([freePort(), freePort(), freePort()]);
    const p = await proxy(
      serverArgs(ps, `127.0.0.1:${backend}`, ['--http', '--allow', BILLING, '--admin', `127.0.0.1:${admin}`]),
    );
    await proxy(clientArgs(pc, ps, 'billing'));
    for (let i = 0; i < 3; i++) assert.equal((await curl([`http://127.0.0.1:${pc}/`])).stdout, 'ok');
    await new Promise<void>((r) => {
      const c = net.connect(ps, '127.0.0.1', () => {
        c.end();
        r();
      });
    });
    assert.equal((await fetch(`http://127.0.0.1:${admin}/healthz`)).status, 200);
    const ready = await fetch(`http://127.0.0.1:${admin}/readyz`);
    assert.equal(ready.status, 200);
    assert.match(await ready.text(), /^ready: 1 listener/);
    await until(
      () => /"event":"request"[^]*"event":"request"[^]*"event":"request"/.test(p.output()),
      5000,
      'request logs',
    );
    const m = await eventually(
      async () => (await fetch(`http://127.0.0.1:${admin}/metrics`)).text(),
      (t) => /result="probe"/.test(t),
    );
    assert.match(m, /mtls_proxy_handshakes_total\{listener="server",result="ok",reason="none"\} [1-3]/);
    assert.match(m, /mtls_proxy_handshakes_total\{listener="server",result="probe",reason="NO_DATA"\} 1/);
    assert.match(
      m,
      new RegExp(
        `mtls_proxy_identity_connections_total\\{listener="server",identity="${BILLING.replace(/\//g, '\\/')}"\\} 3`,
      ),
    );
    assert.match(m, /mtls_proxy_certificate_expiry_timestamp_seconds\{listener="server"\} \d{10}/);
    assert.match(m, /mtls_proxy_handshake_duration_seconds_count\{listener="server"\} [1-3]/);
    assert.match(m, /mtls_proxy_bytes_total\{listener="server",direction="down"\} [1-9]\d*/);
    assert.match(m, /process_resident_memory_bytes/);
    const log = p
      .output()
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    const req = log.find((l) => l['event'] === 'request')!;
    assert.equal(req['identity'], BILLING);
    assert.equal(req['decision'], 'allow');
    assert.match(String(req['reason']), /allowed by rule/);
    assert.ok(
      !log.some((l) => l['event'] === 'probe' || l['event'] === 'handshake-failed'),
      'the probe is not logged at info',
    );
  });

  // HTTP mode (Node's TLS socket) and TCP mode (the native engine, or Node's in proxy-node-engine.test.ts).
  for (const protocol of ['http', 'tcp'] as const) {
    it(
      `reload under continuous traffic (${protocol} mode): new certificate, new ` +
        `trust bundle, new policy (config file), 0 failed requests; a corrupt certificate is refused`,
      { skip: protocol === 'http' && NODE_ENGINE_RUN && 'HTTP mode has one engine: run in proxy.test.ts' },
      async () => {
        const dir = tempDir('mtls-reload-');
        const cp = (from: string, to: string) => fs.copyFileSync(pki.file(from), path.join(dir, to));
        cp('server.crt', 'tls.crt');
        cp('server.key', 'tls.key');
        cp('ca.crt', 'ca.crt');
        const backend = await serve(http.createServer((_q, s) => s.end('ok')));
        const [ps, admin] = await Promise.all([freePort(), freePort()]);
        const config = path.join(dir, 'proxy.yaml');
        const yaml = (allow: string[]) =>
          `admin: 127.0.0.1:${admin}\nlisteners:\n  - name: api\n    mode: server\n ` +
          `   protocol: ${protocol}\n    engine: ${ENGINE}\n    listen: 127.0.0.1:${ps}\n ` +
          `   target: 127.0.0.1:${backend}\n    cert: ${dir}/tls.crt\n    key: ${dir}/tls.key\n ` +
          `   ca: ${dir}/ca.crt\n    allow: ${JSON.stringify(allow)}\n`;
        fs.writeFileSync(config, yaml([BILLING]));
        const p = await startProcess(process.execPath, [BIN, 'proxy', '--config', config], /"event":"listening"/);
        const ctx = (who: string) => tls.createSecureContext(clientTlsOptions(pki.creds(who), pki.bundle));
        const billing = ctx('billing');
        const web = ctx('web');
        let failures = 0;
        let ok = 0;
        let running = true;
        const one = (secureContext: tls.SecureContext) =>
          new Promise<number>((resolve) => {
            const req = http.request(
              {
                host: '127.0.0.1',
                port: ps,
                path: '/',
                createConnection: () =>
                  tls.connect({ host: '127.0.0.1', port: ps, secureContext, servername: 'localhost' }),
              },
              (res) => {
                res.resume();
                res.on('end', () => resolve(res.statusCode ?? 0));
              },
            );
            req.on('error', () => resolve(-1));
            req.end();
          });
        const loop = (async () => {
          while (running) {
            (await one(billing)) === 200 ? ok++ : failures++;
          }
        })();
        // Each reload is followed by requests on the new state, however slow the machine (no timing in the assertion).
        const waitReload = async (n: number) => {
          await until(
            () => (p.output().match(/"event":"(reloaded|policy-reloaded)"/g) ?? []).length >= n,
            5000,
            `reload ${n}`,
          );
          const before = ok;
          await until(() => ok >= before + 8 || failures > 0, 10_000, `requests after reload ${n}`);
        };
        // 1. a new certificate for the same names
        const fresh = await pki.issue({
          profile: 'server',
          name: 'server2',
          names: { dns: ['localhost'], ip: ['127.0.0.1'] },
        });
        fs.writeFileSync(path.join(dir, 'tls.key.new'), fresh.key, { mode: 0o600 });
        fs.writeFileSync(path.join(dir, 'tls.crt.new'), fresh.cert);
        fs.renameSync(path.join(dir, 'tls.key.new'), path.join(dir, 'tls.key'));
        fs.renameSync(path.join(dir, 'tls.crt.new'), path.join(dir, 'tls.crt'));
        await waitReload(1);
        // 2. a trust bundle with one more CA (the old one stays)
        const other = await testPki('other.example');
        fs.writeFileSync(path.join(dir, 'ca.crt.new'), pki.bundle + other.bundle);
        fs.renameSync(path.join(dir, 'ca.crt.new'), path.join(dir, 'ca.crt'));
        await waitReload(2);
        await other.ca.close();
        // 3. a corrupt certificate: refused, the proxy keeps serving with the previous one
        fs.writeFileSync(
          path.join(dir, 'tls.crt'),
          '-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n',
        );
        await until(() => /"event":"reload-failed"/.test(p.output()), 5000, 'the refused reload');
        const okBefore = ok;
        await until(() => ok > okBefore + 5, 5000, 'traffic after the refused reload');
        // 4. the policy: allow web too, by editing the config file (and SIGHUP, for good measure)
        // denied: a 403 in HTTP mode; in TCP mode the connection closes before any byte reaches the backend
        assert.equal(await one(web), protocol === 'http' ? 403 : -1);
        fs.writeFileSync(config, yaml([BILLING, 'spiffe://test.example/ns/prod/sa/web']));
        await waitReload(3);
        p.child.kill('SIGHUP');
        assert.equal(await one(web), 200);
        running = false;
        await loop;
        assert.equal(failures, 0, `${failures} failed of ${ok + failures}`);
        assert.ok(ok > 20, `only ${ok} requests ran`);
        const m = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
        // At least the corrupt file; a half-done rotation (new key, old certificate for a moment) is refused too.
        assert.match(m, /mtls_proxy_reloads_total\{listener="api",result="error"\} [1-9]/);
        assert.match(m, /mtls_proxy_reloads_total\{listener="api",result="ok"\} 2/);
      },
    );
  }

  it('SIGTERM drains: new connections are refused, a live one finishes, exit 0', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let arrived = false;
    const backend = await serve(
      net.createServer((s) => {
        s.once('data', () => {
          arrived = true;
          void gate.then(() => s.end('done\n'));
        });
      }),
    );
    const [ps, pc] = await Promise.all([freePort(), freePort()]);
    const p = await proxy(serverArgs(ps, `127.0.0.1:${backend}`, ['--allow', BILLING, '--drain-timeout', '10s']));
    await proxy(clientArgs(pc, ps, 'billing'));
    const live = new Promise<string>((resolve) => {
      const c = net.connect(pc, '127.0.0.1', () => c.write('go'));
      let d = '';
      c.on('data', (x) => (d += x));
      c.on('close', () => resolve(d));
    });
    await until(() => arrived, 5000, 'the live connection to reach the backend');
    const exited = new Promise<number | null>((r) => p.child.on('exit', r));
    p.child.kill('SIGTERM');
    await until(() => /"event":"draining"/.test(p.output()), 5000, 'draining');
    const refused = await new Promise<string>((resolve) => {
      const c = net.connect(ps, '127.0.0.1');
      c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      c.on('connect', () => {
        c.destroy();
        resolve('connected');
      });
    });
    assert.equal(refused, 'ECONNREFUSED');
    release();
    assert.equal(await live, 'done\n');
    assert.equal(await exited, 0);
    assert.match(p.output(), /"event":"drained"[^\n]*"closedByForce":0/);
  });
});

describe('proxy revocation (CRL)', () => {
  it(
    'a revoked client is refused; revoking another by replacing the CRL file ' +
      'takes effect at once, resumed sessions included',
    async () => {
      const dir = tempDir('mtls-crl-proxy-');
      const root = makeCert({ cn: 'CRL Root', ca: true });
      const alice = makeCert({ cn: 'alice', issuer: root, eku: [OID.clientAuth], uri: ['spiffe://crl.example/alice'] });
      const bob = makeCert({ cn: 'bob', issuer: root, eku: [OID.clientAuth], uri: ['spiffe://crl.example/bob'] });
      const crl = opensslCrl(root, [bob], path.join(dir, 'crl.pem'));
      const backend = await serve(net.createServer((s) => s.end('hi\n')));
      const ps = await freePort();
      const p = await proxy([
        'server',
        '--listen',
        `127.0.0.1:${ps}`,
        '--target',
        `127.0.0.1:${backend}`,
        '--cert',
        pki.file('server.crt'),
        '--key',
        pki.file('server.key'),
        '--ca',
        writePem(dir, 'root.pem', [root]),
        '--crl',
        crl,
        '--allow',
        'trust-domain:crl.example',
      ]);
      const ctx = (c: TestCert) => tls.createSecureContext({ cert: c.pem, key: keyPem(c), ca: pki.bundle });
      const attempt = async (secureContext: tls.SecureContext, session?: Buffer) => {
        const { data, ...rest } = await tlsAttempt(ps, secureContext, session ? { session } : {});
        return { ok: data === 'hi\n', ...rest };
      };
      const a1 = await attempt(ctx(alice));
      assert.equal(a1.ok, true, 'alice is not revoked');
      assert.ok(a1.session);
      assert.equal((await attempt(ctx(alice), a1.session)).resumed, true, 'her session resumes');
      assert.equal((await attempt(ctx(bob))).ok, false, 'bob is revoked');
      opensslCrl(root, [bob, alice], crl);
      await until(() => /"event":"reloaded"[^\n]*"trustChanged":true/.test(p.output()), 5000, 'the CRL reload');
      assert.equal((await attempt(ctx(alice))).ok, false, 'alice is revoked now');
      const resumed = await attempt(ctx(alice), a1.session);
      assert.equal(resumed.ok, false, 'her old session does not get her in');
    },
  );
});

describe('proxy cluster: workers share session ticket keys', () => {
  it(
    'with --workers 2, sessions resume on whichever worker gets the connection; ' + 'the primary sums the metrics',
    async () => {
      const backend = await serve(net.createServer((s) => s.end('hi\n')));
      const [ps, admin] = await Promise.all([freePort(), freePort()]);
      const p = await proxy(
        [
          ...serverArgs(ps, `127.0.0.1:${backend}`, [
            '--allow',
            BILLING,
            '--workers',
            '2',
            '--admin',
            `127.0.0.1:${admin}`,
          ]),
        ],
        2,
      );
      const secureContext = tls.createSecureContext(clientTlsOptions(pki.creds('billing'), pki.bundle));
      let session: Buffer | undefined;
      const resumed: boolean[] = [];
      for (let i = 0; i < 10; i++) {
        resumed.push(
          await new Promise<boolean>((resolve, reject) => {
            const c = tls.connect({
              host: '127.0.0.1',
              port: ps,
              secureContext,
              servername: 'localhost',
              ...(session ? { session } : {}),
            });
            c.on('session', (s: Buffer) => {
              session = s;
            });
            c.on('data', () => undefined);
            c.on('end', () => resolve(c.isSessionReused()));
            c.on('error', reject);
          }),
        );
      }
      assert.equal(resumed[0], false);
      assert.deepEqual(resumed.slice(1), Array(9).fill(true), 'every later connection resumed');
      await until(() => (p.output().match(/"event":"connection"/g) ?? []).length >= 10, 5000, 'connection logs');
      const pids = new Set(
        p
          .output()
          .split('\n')
          .filter((l) => l.includes('"event":"connection"'))
          .map((l) => (JSON.parse(l) as { pid: number }).pid),
      );
      assert.equal(pids.size, 2, 'both workers served connections');
      const m = await (await fetch(`http://127.0.0.1:${admin}/metrics`)).text();
      assert.match(m, /mtls_proxy_handshakes_total\{listener="server",result="ok",reason="none"\} 10/);
      assert.match(m, /mtls_proxy_sessions_resumed_total\{listener="server"\} 9/);
      assert.equal((await fetch(`http://127.0.0.1:${admin}/readyz`)).status, 200);
    },
  );
});
