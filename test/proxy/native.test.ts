/**
 * What the native engine (native/) adds to the proxy tests that run on it (proxy.test.ts, scale.test.ts):
 * real OpenSSL clients (TLS 1.2, KeyUpdate both ways, TLS 1.1 refused), every kind of refusal classified as the
 * Node engine classifies it, and no file descriptor left behind by any way a connection can end.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { close, freePort, listen, testPki, until, type TestPki, credentialArgs } from '../helpers/endpoints.js';
import { BIN } from '../helpers/pki.js';
import { startProcess, stopAll } from '../helpers/process.js';

let pki: TestPki;
let other: TestPki;
const servers: net.Server[] = [];
const BILLING = 'spiffe://test.example/ns/prod/sa/billing';

before(async () => {
  [pki, other] = await Promise.all([testPki(), testPki('other.example')]);
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await Promise.all([pki.ca.close(), other.ca.close()]);
});

async function echoBackend(): Promise<number> {
  const s = net.createServer({ allowHalfOpen: true }, (c) => {
    c.on('error', () => undefined);
    c.pipe(c);
  });
  servers.push(s);
  return listen(s);
}

async function nativeProxy(target: string, extra: string[] = []) {
  const [port, admin] = [await freePort(), await freePort()];
  const p = await startProcess(
    process.execPath,
    [
      BIN,
      'proxy',
      'server',
      '--listen',
      `127.0.0.1:${port}`,
      '--target',
      target,
      ...credentialArgs(pki),
      '--admin',
      `127.0.0.1:${admin}`,
      ...extra,
    ],
    /"event":"listening"/,
  );
  assert.match(
    p.output(),
    /"event":"listening"[^\n]*"engine":"native"/,
    'a TCP listener runs on the native engine by default',
  );
  return { port, admin, ...p };
}

/** /metrics on a connection of its own that closes (no keep-alive socket held in the proxy). */
function metrics(admin: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get(
        { host: '127.0.0.1', port: admin, path: '/metrics', agent: false, headers: { connection: 'close' } },
        (res) => {
          let t = '';
          res.on('data', (d) => (t += d));
          res.on('end', () => resolve(t));
        },
      )
      .on('error', reject);
  });
}

/** Connects with `opts`, writes `line`, resolves with what came back before the close (or the error code). */
function roundTrip(port: number, opts: tls.ConnectionOptions, line = 'ping\n'): Promise<string> {
  return new Promise((resolve) => {
    const c = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ...opts }, () => c.end(line));
    let got = '';
    c.on('data', (d) => (got += d));
    c.on('error', (e: NodeJS.ErrnoException) => (got ||= `error ${e.code}`));
    c.on('close', () => resolve(got));
  });
}

/** openssl s_client fed `steps` (text, or a pause in ms); resolves with its stdout and stderr. */
function sClient(port: number, args: string[], steps: (string | number)[]): Promise<string> {
  return new Promise((resolve) => {
    const c = spawn('openssl', [
      's_client',
      '-connect',
      `127.0.0.1:${port}`,
      '-servername',
      'localhost',
      '-cert',
      pki.file('billing.crt'),
      '-cert_chain',
      pki.file('billing.crt'),
      '-key',
      pki.file('billing.key'),
      '-CAfile',
      pki.file('ca.crt'),
      '-msg',
      ...args,
    ]);
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    c.on('close', () => resolve(out));
    void (async () => {
      for (const s of steps) {
        if (typeof s === 'number') await new Promise((r) => setTimeout(r, s));
        else c.stdin.write(s);
      }
      c.stdin.end();
    })();
  });
}

describe('native engine', () => {
  it(
    'openssl s_client: TLS 1.3 with KeyUpdate both ways keeps relaying, TLS 1.2 ' + 'works, TLS 1.1 is refused',
    async () => {
      const p = await nativeProxy(`127.0.0.1:${await echoBackend()}`, ['--allow', BILLING]);
      // "K" asks s_client to send a KeyUpdate that requests ours; "k" one that does not.
      const t13 = await sClient(
        p.port,
        [],
        [300, 'first\n', 300, 'K\n', 300, 'second\n', 300, 'k\n', 300, 'third\n', 500],
      );
      assert.match(t13, /^first$/m);
      assert.match(
        t13,
        />>> TLS 1\.3, Handshake \[length 0005\], KeyUpdate[^]*<<< TLS 1\.3, Handshake \[length 0005\], KeyUpdate[^]*^second$/m,
        'our KeyUpdate answers the requested one, and the echo still decrypts',
      );
      assert.match(t13, /^third$/m);
      const t12 = await sClient(p.port, ['-tls1_2'], [300, 'over 1.2\n', 500]);
      assert.match(t12, /Protocol\s*: TLSv1\.2/);
      assert.match(t12, /^over 1\.2$/m);
      const t11 = await sClient(p.port, ['-tls1_1', '-cipher', 'DEFAULT:@SECLEVEL=0'], [300, 'old\n', 300]);
      assert.doesNotMatch(t11, /^old$/m);
      await until(
        () => /"event":"handshake-failed"[^\n]*"code":"HANDSHAKE_FAILED"/.test(p.output()),
        5000,
        'the TLS 1.1 refusal in the log',
      );
    },
  );

  it('refusals are classified like the Node engine does, and no way of ending leaves a descriptor behind', async () => {
    const backend = await echoBackend();
    const p = await nativeProxy(`127.0.0.1:${backend}`, ['--allow', BILLING, '--handshake-timeout', '400ms']);
    const creds = (t: TestPki, name: string) => ({ cert: t.creds(name).cert, key: t.creds(name).key, ca: pki.bundle });
    assert.equal(await roundTrip(p.port, creds(pki, 'billing')), 'ping\n');
    await until(() => /"event":"connection"/.test(p.output()), 5000, 'the first connection to close');
    const fds = () => fs.readdirSync(`/proc/${p.child.pid}/fd`).length;
    const listing = () =>
      fs
        .readdirSync(`/proc/${p.child.pid}/fd`)
        .map((f) => {
          try {
            return fs.readlinkSync(`/proc/${p.child.pid}/fd/${f}`);
          } catch {
            return '?';
          }
        })
        .join(' ');
    await metrics(p.admin); // what the first scrape opens for good is in the baseline
    const baseline = fds();
    const before = listing();
    // Node opens and closes descriptors of its own now and then (a scrape reads /proc): equal within 5 s.
    const settled = async () => {
      await until(() => fds() <= baseline, 5000, 'descriptors back at the baseline').catch(() => undefined);
      return fds();
    };

    for (let i = 0; i < 3; i++) {
      assert.equal(await roundTrip(p.port, creds(pki, 'billing')), 'ping\n', 'allowed');
      assert.equal(await roundTrip(p.port, creds(pki, 'web')), '', 'denied by the policy');
      assert.doesNotMatch(await roundTrip(p.port, { ca: pki.bundle }), /ping/, 'no client certificate');
      assert.doesNotMatch(
        await roundTrip(p.port, creds(pki, 'server')),
        /ping/,
        'a server certificate is not a client certificate',
      );
      assert.doesNotMatch(await roundTrip(p.port, creds(other, 'billing')), /ping/, 'another CA');
      await new Promise<void>((resolve) =>
        net.connect(p.port, '127.0.0.1', function (this: net.Socket) {
          this.destroy();
          resolve();
        }),
      ); // a probe
      await new Promise<void>((resolve) => {
        const c = net.connect(p.port, '127.0.0.1', () => c.write(Buffer.from('160301', 'hex')));
        c.on('close', () => resolve());
        c.on('error', () => undefined);
      }); // stalls
      await new Promise<void>((resolve) => {
        const c = net.connect(p.port, '127.0.0.1', () => c.end('GET / HTTP/1.1\r\n\r\n'));
        c.on('close', () => resolve());
        c.on('error', () => undefined);
        c.resume();
      }); // not TLS
    }
    // The engine reports a close to JavaScript just after the socket closes: the gauge reaches 0 a moment later.
    let m = await metrics(p.admin);
    for (
      const t0 = Date.now();
      !/mtls_proxy_active_connections\{listener="server"\} 0/.test(m) && Date.now() - t0 < 5000;
    ) {
      await new Promise((r) => setTimeout(r, 50));
      m = await metrics(p.admin);
    }
    const count = (result: string, reason: string) =>
      Number(
        new RegExp(
          `mtls_proxy_handshakes_total\\{listener="server",result="${result}",reason="${reason}"\\} (\\d+)`,
        ).exec(m)?.[1] ?? 0,
      );
    assert.equal(count('ok', 'none'), 4, m);
    assert.equal(count('denied', 'PEER_NOT_ALLOWED'), 3);
    assert.equal(count('failed', 'NO_CLIENT_CERT'), 3);
    assert.equal(count('failed', 'CERT_WRONG_PURPOSE'), 3);
    assert.equal(count('failed', 'CERT_UNTRUSTED'), 3);
    assert.equal(count('failed', 'HANDSHAKE_TIMEOUT'), 3);
    assert.equal(count('failed', 'NOT_TLS'), 3);
    assert.equal(count('probe', 'NO_DATA'), 3);
    assert.match(m, /mtls_proxy_active_connections\{listener="server"\} 0/);
    // At most the baseline: it may hold the first scrape's socket, which closes any moment.
    assert.ok(
      (await settled()) <= baseline,
      `every socket the engine took is closed again: before ${before}, after ${listing()}`,
    );

    // A target that refuses: the client is closed, the log says why, and nothing leaks either.
    servers
      .splice(
        servers.findIndex((s) => (s.address() as net.AddressInfo).port === backend),
        1,
      )[0]!
      .close();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(await roundTrip(p.port, creds(pki, 'billing')), '');
    await until(
      () => /"event":"target-unreachable"[^\n]*"code":"ECONNREFUSED"/.test(p.output()),
      5000,
      'the unreachable target in the log',
    );
    assert.ok((await settled()) <= baseline, listing());
  });
});
