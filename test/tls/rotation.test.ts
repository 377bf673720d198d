import assert from 'node:assert/strict';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { MtlsHttpsAgent } from '../../src/adapters/agents.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { connectMtls } from '../../src/tls/client.js';
import { serverTlsOptions } from '../../src/tls/options.js';
import { CredentialReloader, type ReloadEvent } from '../../src/tls/reload.js';
import { close, listen, testPki, until, type TestPki } from '../helpers/endpoints.js';
import { tempDir } from '../helpers/pki.js';

let pki: TestPki;
before(async () => {
  pki = await testPki();
});
after(async () => {
  await pki.ca.close();
});

/** Writes server.crt/server.key/ca.crt for a fresh certificate into `dir` (each file atomically). */
async function writeServerCert(dir: string, name: string): Promise<string> {
  const issued = await pki.ca.issue({ profile: 'server', name, names: { dns: ['localhost'], ip: ['127.0.0.1'] } });
  const key = issued.privateKey!.export({ type: 'pkcs8', format: 'pem' }) as string;
  for (const [f, data] of [
    ['server.key', key],
    ['server.crt', issued.chainPem],
  ] as const) {
    const tmp = path.join(dir, `.${f}.tmp`);
    fs.writeFileSync(tmp, data, { mode: 0o600 });
    fs.renameSync(tmp, path.join(dir, f));
  }
  return issued.certificate.fingerprint256;
}

/** A new directory with ca.crt and a first server certificate, watched, behind an mTLS HTTPS server that allows anyone. */
async function rotatingServer(name: string, start = true) {
  const dir = tempDir();
  fs.writeFileSync(path.join(dir, 'ca.crt'), pki.bundle);
  const fingerprint = await writeServerCert(dir, name);
  return { dir, fingerprint, ...(await reloadingServer(dir, start)) };
}

/** A watched server.crt/server.key/ca.crt in `dir` behind an mTLS HTTPS server that allows anyone. */
async function reloadingServer(dir: string, attachAndStart = true) {
  const reloader = new CredentialReloader(
    { certFile: path.join(dir, 'server.crt'), keyFile: path.join(dir, 'server.key'), caFile: path.join(dir, 'ca.crt') },
    20,
  );
  const server = createMtlsHttpsServer(
    { credentials: reloader.current, policy: compilePolicy({ allow: ['any'] }) },
    (_req, res) => res.end('ok'),
  );
  reloader.attach(server, (c) => serverTlsOptions(c));
  if (attachAndStart) reloader.start();
  const port = await listen(server);
  return { reloader, server, port };
}

function get(port: number, agent: https.Agent): Promise<{ status: number }> {
  return new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, path: '/', agent, servername: 'localhost' }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }));
    });
    req.on('error', reject);
  });
}

describe('hot rotation', () => {
  it(
    'rotates the server certificate 10 times under continuous requests: zero ' +
      'failures, new handshakes see the new certificate',
    async () => {
      const { dir, fingerprint, reloader, server, port } = await rotatingServer('rot-0');
      let expected = fingerprint;
      const reloads: ReloadEvent[] = [];
      reloader.on('reloaded', (e: ReloadEvent) => reloads.push(e));
      // A live keep-alive connection opened before the rotations must still serve requests after them.
      const liveAgent = new MtlsHttpsAgent({ credentials: pki.creds('billing'), ca: pki.bundle, keepAlive: true });
      liveAgent.maxSockets = 1;
      const liveFirst = await get(port, liveAgent);
      assert.equal(liveFirst.status, 200);
      let liveSocket: unknown;
      for (const list of Object.values(liveAgent.freeSockets)) liveSocket = list?.[0];
      assert.ok(liveSocket, 'no idle keep-alive socket to reuse');
      // A new connection per request (keepAlive off): every request is a new handshake.
      const agent = new MtlsHttpsAgent({ credentials: pki.creds('billing'), ca: pki.bundle, keepAlive: false });
      let ok = 0,
        failed = 0;
      const seen = new Set<string>();
      let stop = false;
      const load = (async () => {
        while (!stop) {
          try {
            const c = await connectMtls({
              host: '127.0.0.1',
              port,
              ca: pki.bundle,
              credentials: pki.creds('billing'),
              expect: { servername: 'localhost' },
            });
            seen.add(c.server.fingerprint256);
            c.socket.destroy();
            const r = await get(port, agent);
            if (r.status === 200) ok++;
            else failed++;
          } catch {
            failed++;
          }
        }
      })();
      for (let i = 1; i <= 10; i++) {
        expected = await writeServerCert(dir, `rot-${i}`);
        await until(() => reloads.at(-1)?.fingerprint256 === expected, 5000, `reload ${i}`);
        const c = await connectMtls({
          host: '127.0.0.1',
          port,
          ca: pki.bundle,
          credentials: pki.creds('billing'),
          expect: { servername: 'localhost' },
        });
        assert.equal(c.server.fingerprint256, expected, `handshake after rotation ${i} sees the new certificate`);
        c.socket.destroy();
        // Requests on both sides of every rotation, however slow the machine is (no timing in the assertion).
        const before = ok;
        await until(() => ok >= before + 3 || failed > 0, 10_000, `requests after rotation ${i}`);
      }
      stop = true;
      await load;
      const liveAfter = await get(port, liveAgent);
      assert.equal(liveAfter.status, 200);
      let reused: unknown;
      for (const list of Object.values(liveAgent.sockets)) reused = list?.[0];
      for (const list of Object.values(liveAgent.freeSockets)) reused ??= list?.[0];
      assert.equal(reused, liveSocket, 'the live connection was dropped by a rotation');
      liveAgent.destroy();
      reloader.stop();
      await close(server);
      assert.equal(failed, 0);
      assert.ok(ok > 20, `only ${ok} requests made`);
      assert.ok(seen.size >= 5, `the load saw only ${seen.size} certificates`);
      assert.equal(reloads.length, 10);
    },
  );

  it(
    'keeps session tickets across a certificate rotation, and invalidates them ' + 'when the trust bundle changes',
    async () => {
      const { dir, reloader, server, port } = await rotatingServer('tick-0', false);
      const resumes = async (session: Buffer) => {
        const c = await connectMtls({
          host: '127.0.0.1',
          port,
          ca: pki.bundle,
          credentials: pki.creds('billing'),
          expect: { servername: 'localhost' },
          session,
        });
        c.socket.destroy();
        return c.resumed;
      };
      try {
        const first = await connectMtls({
          host: '127.0.0.1',
          port,
          ca: pki.bundle,
          credentials: pki.creds('billing'),
          expect: { servername: 'localhost' },
        });
        await until(() => first.session() !== undefined, 5000, 'a ticket');
        first.socket.destroy();
        const ticket = first.session()!;
        assert.equal(await resumes(ticket), true, 'the ticket does not resume at all');
        await writeServerCert(dir, 'tick-1');
        assert.equal(await reloader.reload(), true);
        assert.equal(await resumes(ticket), true, 'setSecureContext dropped the ticket keys');
        // Trust change: add a second root to the bundle.
        const other = await testPki('other.example');
        fs.writeFileSync(path.join(dir, 'ca.crt'), pki.bundle + other.bundle);
        assert.equal(await reloader.reload(), true);
        assert.equal(await resumes(ticket), false, 'a session verified under the old trust was resumed');
        await other.ca.close();
      } finally {
        await close(server);
      }
    },
  );

  it('a broken new certificate is refused with a reason and the server keeps serving the old one', async () => {
    const { dir, fingerprint: fp, reloader, server, port } = await rotatingServer('broken-0');
    const errors: string[] = [];
    reloader.on('reload-error', (e: Error) => errors.push(e.message));
    fs.writeFileSync(path.join(dir, 'server.crt'), '-----BEGIN CERTIFICATE-----\ngarbage\n');
    await until(() => errors.length > 0, 5000, 'a reload error');
    assert.match(errors[0]!, /kept the previous certificate: .*server\.crt.*not terminated/);
    // A valid certificate with the wrong key is refused as well.
    const other = await pki.ca.issue({ profile: 'server', name: 'wrongkey', names: { dns: ['localhost'] } });
    fs.writeFileSync(path.join(dir, 'server.crt'), other.chainPem);
    await until(() => errors.length > 1, 5000, 'a second reload error');
    assert.match(errors[1]!, /does not belong to/);
    const c = await connectMtls({
      host: '127.0.0.1',
      port,
      ca: pki.bundle,
      credentials: pki.creds('billing'),
      expect: { servername: 'localhost' },
    });
    assert.equal(c.server.fingerprint256, fp);
    c.socket.destroy();
    reloader.stop();
    await close(server);
  });

  it('follows a Kubernetes-style symlink swap (..data -> new directory)', async () => {
    const dir = tempDir();
    const v1 = path.join(dir, '..2026_v1');
    fs.mkdirSync(v1);
    fs.writeFileSync(path.join(v1, 'ca.crt'), pki.bundle);
    const first = await writeServerCert(v1, 'k8s-1');
    fs.symlinkSync('..2026_v1', path.join(dir, '..data'));
    for (const f of ['server.crt', 'server.key', 'ca.crt']) fs.symlinkSync(path.join('..data', f), path.join(dir, f));
    const { reloader, server, port } = await reloadingServer(dir);
    assert.equal(reloader.current.leaf.fingerprint256, first);
    const v2 = path.join(dir, '..2026_v2');
    fs.mkdirSync(v2);
    fs.writeFileSync(path.join(v2, 'ca.crt'), pki.bundle);
    const second = await writeServerCert(v2, 'k8s-2');
    // The kubelet's atomic swap: a new symlink renamed over ..data.
    fs.symlinkSync('..2026_v2', path.join(dir, '..data_tmp'));
    fs.renameSync(path.join(dir, '..data_tmp'), path.join(dir, '..data'));
    await until(() => reloader.current.leaf.fingerprint256 === second, 5000, 'the swap to be seen');
    const c = await connectMtls({
      host: '127.0.0.1',
      port,
      ca: pki.bundle,
      credentials: pki.creds('billing'),
      expect: { servername: 'localhost' },
    });
    assert.equal(c.server.fingerprint256, second);
    c.socket.destroy();
    reloader.stop();
    await close(server);
    assert.notEqual(first, second);
  });
});

describe('the watcher reacts to our files only, and a burst delays a reload by a second at most (issue 16)', () => {
  it('a log file written every 20 ms beside the certificates does not postpone a rotation', async () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'ca.crt'), pki.bundle);
    await writeServerCert(dir, 'first');
    const reloader = new CredentialReloader({
      certFile: path.join(dir, 'server.crt'),
      keyFile: path.join(dir, 'server.key'),
      caFile: path.join(dir, 'ca.crt'),
    }).start();
    let reloaded = 0;
    reloader.on('reloaded', () => reloaded++);
    const log = setInterval(() => fs.appendFileSync(path.join(dir, 'app.log'), 'a line\n'), 20);
    try {
      await new Promise((r) => setTimeout(r, 300));
      const t0 = Date.now();
      await writeServerCert(dir, 'second');
      await until(() => reloaded === 1, 5000, 'the rotation while the log is written');
      assert.ok(Date.now() - t0 < 2500, `reloaded after ${Date.now() - t0} ms`);
    } finally {
      clearInterval(log);
      reloader.stop();
    }
  });
});
