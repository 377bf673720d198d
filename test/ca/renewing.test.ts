/**
 * Issue 15, in-process: RenewingCredentials enrolls with a token and renews from a real `mtls ca serve`, keeping
 * the key in memory only; an mtlskit HTTPS server, an undici fetch client and an https.Agent take it directly and
 * follow every renewal with no failed request and no file written.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import { after, describe, it } from 'node:test';
import https from 'node:https';
import { fetch } from 'undici';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { identityOf } from '../../src/identity/identity.js';
import { MtlsHttpsAgent, mtlsUndiciAgent } from '../../src/adapters/agents.js';
import { RenewingCredentials } from '../../src/agent/renewing.js';
import { makeToken, provisionerKey, tokenAudience } from '../../src/ca/tokens.js';
import { MtlsError } from '../../src/errors.js';
import { compilePolicy } from '../../src/identity/policy.js';
import { checkLeafNames } from '../../src/pki/profiles.js';
import { connectMtls } from '../../src/tls/client.js';
import { quickToken, startCa, type Ca } from '../helpers/ca-service.js';
import { close, listen } from '../helpers/endpoints.js';
import { mtls } from '../helpers/pki.js';
import { stopAll } from '../helpers/process.js';

/** Closed after the tests, also when one fails midway (a server or an agent left running would hold the process). */
const cleanups: (() => unknown)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
  stopAll();
});

const serverToken = (ca: Ca, validityMs: number) =>
  makeToken(provisionerKey(ca.home, true), tokenAudience(ca.fingerprint), {
    name: 'api',
    profile: 'server',
    names: checkLeafNames('server', { dns: ['localhost'], ip: ['127.0.0.1'] }),
    validityMs,
  });

/** Entries of the temporary directory whose name an agent's files would carry. */
const agentDirs = () => new Set(fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('mtls-agent-')));

describe('RenewingCredentials', () => {
  it('a server and two kinds of client take it directly and rotate 12-second certificates with no failed request', async () => {
    const ca = await startCa('InMemory');
    const before = agentDirs();
    const server = await RenewingCredentials.start({
      caUrl: ca.url,
      root: ca.root,
      token: await serverToken(ca, 12e3),
    });
    const client = await RenewingCredentials.start({
      caUrl: ca.url,
      root: ca.root,
      token: await quickToken(ca, 'web', 12e3),
    });
    cleanups.push(
      () => server.close(),
      () => client.close(),
    );
    const reloads = { server: 0, client: 0 };
    server.on('reloaded', () => reloads.server++);
    client.on('reloaded', () => reloads.client++);
    assert.equal(server.status.health, 'ok');
    assert.equal(client.current.leaf.san?.uri[0], 'spiffe://svc.example/web');

    // The client certificates the server saw, by the path the request came from (/https, /fetch).
    const callers = new Map<string, Set<string>>();
    const app = createMtlsHttpsServer(
      { credentials: server, policy: compilePolicy({ allow: ['spiffe://svc.example/web'] }) },
      (req, res) => {
        const seen = callers.get(req.url!) ?? callers.set(req.url!, new Set()).get(req.url!)!;
        seen.add(identityOf(req)!.certificate.serialHex);
        res.end('ok');
      },
    );
    const port = await listen(app);
    const dispatcher = mtlsUndiciAgent({ credentials: client, ca: ca.root });
    const agent = new MtlsHttpsAgent({ credentials: client, ca: ca.root });
    cleanups.push(
      () => agent.destroy(),
      () => dispatcher.close(),
      () => close(app),
    );
    const servers = new Set<string>();
    const failures: string[] = [];
    const viaHttps = () =>
      new Promise<void>((resolve) => {
        https
          .get({ host: '127.0.0.1', port, path: '/https', agent, timeout: 5000 }, (res) => {
            res.resume();
            res.on('end', () =>
              res.statusCode === 200 ? resolve() : (failures.push(`https ${res.statusCode}`), resolve()),
            );
          })
          .on('error', (err) => (failures.push(`https ${err.message}`), resolve()));
      });
    const viaFetch = async () => {
      try {
        const res = await fetch(`https://127.0.0.1:${port}/fetch`, { dispatcher });
        if (res.status !== 200) failures.push(`fetch ${res.status}`);
        await res.text();
      } catch (err) {
        failures.push(`fetch ${(err as Error).message}`);
      }
    };
    // A new connection each time (the two agents keep theirs alive): what a new client sees of the server.
    const viaConnect = async () => {
      try {
        const c = await connectMtls({ host: '127.0.0.1', port, credentials: client, ca: ca.root });
        servers.add(c.server.certificate.serialHex);
        c.socket.destroy();
      } catch (err) {
        failures.push(`connect ${(err as Error).message}`);
      }
    };
    // Two rotations on each side: at about 2/3 of 12 s, twice.
    const end = Date.now() + 19_000;
    let requests = 0;
    while (Date.now() < end) {
      await Promise.all([viaHttps(), viaFetch(), viaConnect()]);
      requests += 3;
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.deepEqual(failures, [], `${failures.length} of ${requests} requests failed`);
    assert.ok(reloads.server >= 2 && reloads.client >= 2, `reloads ${JSON.stringify(reloads)}`);
    // The server presented each of its certificates; the clients presented theirs (seen by the server).
    assert.ok(servers.size >= 3, `server certificates seen by new connections: ${servers.size}`);
    for (const via of ['/https', '/fetch'])
      assert.ok(
        (callers.get(via)?.size ?? 0) >= 3,
        `client certificates seen by the server on ${via}: ${callers.get(via)?.size}`,
      );
    assert.ok(servers.has(server.current.leaf.serialHex), 'the newest server certificate is the one in use');
    // Nothing was written: the key lives in this process only.
    assert.deepEqual(
      [...agentDirs()].filter((d) => !before.has(d)),
      [],
    );
    // The CA recorded each renewal as superseding the one before.
    const listed = mtls(['ca', 'list', '--json'], { env: ca.env });
    assert.equal(listed.status, 0, listed.stderr);
    const rows = JSON.parse(listed.stdout) as { subject: string; supersededBy?: string }[];
    assert.ok(rows.filter((r) => r.subject.startsWith('CN=web,') && r.supersededBy).length >= 2, listed.stdout);

    // connectMtls takes it too, and presents the newest certificate.
    const c = await connectMtls({
      host: '127.0.0.1',
      port,
      credentials: client,
      ca: ca.root,
      expect: { servername: 'localhost' },
    });
    c.socket.end('GET /connect HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n');
    await new Promise((r) => c.socket.on('close', r).resume());
    assert.ok(
      callers.get('/connect')?.has(client.current.leaf.serialHex),
      'the server saw the newest client certificate',
    );
  });

  it('renews given credentials when due; a revoked certificate cannot renew; a spent token is refused', async () => {
    const ca = await startCa('Revoked');
    const t = await quickToken(ca, 'gone');
    const first = await RenewingCredentials.start({ caUrl: ca.url, root: ca.root, token: t });
    cleanups.push(() => first.close());
    // Handed a current certificate that is due (renewAt 0), it renews at once over mTLS.
    const again = await RenewingCredentials.start({
      caUrl: ca.url,
      root: ca.root,
      credentials: first.current,
      renewAt: 0,
    });
    cleanups.push(() => again.close());
    assert.notEqual(again.current.leaf.serialHex, first.current.leaf.serialHex);
    assert.equal(again.current.leaf.san?.uri[0], 'spiffe://svc.example/gone');
    const r = mtls(['revoke', again.current.leaf.serialHex, '--reason', 'keyCompromise'], { env: ca.env });
    assert.equal(r.status, 0, r.stderr);
    await assert.rejects(again.renewNow(), (e: unknown) => e instanceof MtlsError && e.code === 'CERT_REVOKED');
    // The certificate held is kept: the CA refused to renew it, it did not expire.
    assert.equal(again.status.serial, again.current.leaf.serialHex);
    assert.notEqual(again.status.health, 'expired');
    await assert.rejects(
      RenewingCredentials.start({ caUrl: ca.url, root: ca.root, token: t }),
      (e: unknown) => e instanceof MtlsError && e.code === 'TOKEN_SPENT',
    );
  });
});
