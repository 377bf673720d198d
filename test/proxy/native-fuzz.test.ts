/**
 * The native engine (native/, C++ facing the network) against hostile input: mutated and truncated TLS
 * records, garbage, connections cut at every stage of the handshake and of the relay, resets, and reloads of the
 * CRLs while handshakes run. Afterwards the proxy is alive, serves a good client, refuses a revoked one, and holds
 * no connection and no descriptor it should not. MTLS_FUZZ_CASES sets the number of cases (default 2,000);
 * docs/proxy.md says how to run it under AddressSanitizer.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { freePort, listen, until } from '../helpers/endpoints.js';
import { crlPki, type CrlPki } from '../helpers/crl-pki.js';
import { crlProxyArgs, startProxy, trackServers } from '../helpers/process.js';

let pki: CrlPki;
const servers = trackServers();
before(() => {
  pki = crlPki();
});

const CASES = Number(process.env['MTLS_FUZZ_CASES'] ?? 2000);

/** A deterministic generator, so that a failing run can be repeated (MTLS_FUZZ_SEED). */
function rng(seed: number) {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
  };
}

/** The first flight of a real client (its ClientHello record), captured from a listener that never answers. */
async function clientHello(): Promise<Buffer> {
  let got = Buffer.alloc(0);
  const sink = net.createServer((s) =>
    s.on('data', (d) => {
      got = Buffer.concat([got, d]);
    }),
  );
  servers.push(sink);
  const port = await listen(sink);
  const c = tls.connect({
    host: '127.0.0.1',
    port,
    secureContext: pki.clientContext(pki.alice),
    servername: 'localhost',
  });
  c.on('error', () => undefined);
  await until(() => got.length > 5 && got.length >= 5 + got.readUInt16BE(3), 5000, 'a ClientHello');
  c.destroy();
  return got;
}

/** Writes `bytes` (in pieces), then ends, waits a moment or resets; resolves when the socket is gone. */
function raw(port: number, pieces: Buffer[], end: 'close' | 'reset' | 'wait'): Promise<void> {
  return new Promise((resolve) => {
    const c = net.connect(port, '127.0.0.1', async () => {
      for (const p of pieces) {
        if (c.destroyed) break;
        c.write(p);
        await new Promise((r) => setImmediate(r));
      }
      if (end === 'close') c.end();
      else if (end === 'reset') c.resetAndDestroy();
      else setTimeout(() => c.destroy(), 30);
    });
    c.on('data', () => undefined);
    c.on('error', () => undefined);
    c.on('close', () => resolve());
    setTimeout(() => c.destroy(), 1500);
  });
}

/** A real client cut after the engine sent it `after` bytes (a stage of the handshake) or once admitted and talking. */
function cutClient(port: number, r: ReturnType<typeof rng>): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const after = r.int(3000);
    let seen = 0;
    sock.on('data', (d) => {
      seen += d.length;
      if (seen >= after) r.int(2) ? sock.resetAndDestroy() : sock.destroy();
    });
    sock.on('error', () => undefined);
    const who = r.int(4) === 0 ? pki.bob : pki.alice;
    const c = tls.connect({ socket: sock, secureContext: pki.clientContext(who), servername: 'localhost' });
    c.on('error', () => undefined);
    c.on('secureConnect', () => c.end(crypto.randomBytes(r.int(70_000))));
    c.on('data', () => undefined);
    c.on('close', () => {
      sock.destroy();
      resolve();
    });
    setTimeout(() => {
      sock.destroy();
      c.destroy();
    }, 1500);
  });
}

const fdsOf = (pid: number) => fs.readdirSync(`/proc/${pid}/fd`).length;

describe(
  'native engine fuzz (issue 12: hostile records, cuts at every stage, reloads during handshakes)',
  { skip: nativeUnavailable() },
  () => {
    it(`${CASES} hostile cases, then the proxy is alive, correct and holds nothing`, async () => {
      const echo = net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => undefined);
        s.pipe(s);
      });
      servers.push(echo);
      const target = await listen(echo);
      const [port, admin] = await Promise.all([freePort(), freePort()]);
      const crl = pki.crls([pki.bob]);
      const p = await startProxy(
        crlProxyArgs(
          port,
          `127.0.0.1:${target}`,
          pki.files,
          crl,
          '--engine',
          'native',
          '--admin',
          `127.0.0.1:${admin}`,
          '--handshake-timeout',
          '2s',
        ),
      );
      const pid = p.child.pid!;
      const hello = await clientHello();
      const baseline = fdsOf(pid);
      const seed = Number(process.env['MTLS_FUZZ_SEED'] ?? crypto.randomInt(1, 2 ** 31));
      const r = rng(seed);
      const tally: Record<string, number> = {};
      const cases: (() => Promise<void>)[] = [
        () => {
          const m = Buffer.from(hello);
          for (let i = 0, n = 1 + r.int(8); i < n; i++) m[r.int(m.length)] = r.int(256);
          return raw(port, [m], (['close', 'reset', 'wait'] as const)[r.int(3)]);
        },
        () => raw(port, [hello.subarray(0, r.int(hello.length))], (['close', 'reset'] as const)[r.int(2)]),
        () => {
          const m = Buffer.from(hello);
          m.writeUInt16BE(r.int(65536), 3);
          return raw(port, [m], 'wait');
        },
        () => raw(port, [Buffer.concat([Buffer.from([0x16, 0x03, 0x03]), r.bytes(2), r.bytes(r.int(600))])], 'close'),
        () => raw(port, [r.bytes(r.int(2000))], (['close', 'reset'] as const)[r.int(2)]),
        () => {
          const cut = r.int(hello.length);
          return raw(port, [hello.subarray(0, cut), hello.subarray(cut)], 'wait');
        },
        () =>
          raw(
            port,
            [Buffer.concat([hello, Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]), r.bytes(r.int(100))])],
            'close',
          ),
        () => cutClient(port, r),
        () => cutClient(port, r),
      ];
      let reloads = 0;
      for (let i = 0; i < CASES; i += 8) {
        if (i % 96 === 0) {
          pki.crls(reloads++ % 2 ? [pki.bob] : [pki.bob, pki.inter], crl);
        } // reloads while handshakes run
        await Promise.all(
          Array.from({ length: Math.min(8, CASES - i) }, () => {
            const k = r.int(cases.length);
            tally[k] = (tally[k] ?? 0) + 1;
            return cases[k]!();
          }),
        );
      }
      pki.crls([pki.bob], crl);
      await new Promise((res) => setTimeout(res, 1500));
      assert.equal(p.child.exitCode, null, `the proxy died (seed ${seed}): ${p.output().slice(-2000)}`);
      // Still correct: alice relayed byte-exact, bob refused.
      const talk = (who: typeof pki.alice) =>
        new Promise<string>((resolve) => {
          const c = tls.connect(
            { host: '127.0.0.1', port, secureContext: pki.clientContext(who), servername: 'localhost' },
            () => c.end('ping'),
          );
          let d = '';
          c.on('data', (x) => (d += x));
          c.on('error', () => undefined);
          c.on('close', () => resolve(d));
        });
      assert.equal(await talk(pki.alice), 'ping', `alice is relayed (seed ${seed})`);
      assert.equal(await talk(pki.bob), '', 'bob is refused');
      const metrics = await new Promise<string>((resolve) =>
        http.get(`http://127.0.0.1:${admin}/metrics`, (res) => {
          let t = '';
          res.on('data', (d) => (t += d));
          res.on('end', () => resolve(t));
        }),
      );
      await until(
        () => fdsOf(pid) <= baseline + 2,
        10_000,
        `descriptors back near ${baseline} (now ${fdsOf(pid)}; seed ${seed})`,
      );
      assert.match(
        metrics,
        /mtls_proxy_active_connections\{listener="server"\} 0/,
        `no connection left open (seed ${seed})`,
      );
      console.log(`fuzz: ${CASES} cases (seed ${seed}), ${reloads} reloads, by kind ${JSON.stringify(tally)}`);
    });
  },
);
