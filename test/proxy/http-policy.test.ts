import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { compilePolicy } from '../../src/identity/policy.js';
import { createMtlsHttpsServer } from '../../src/adapters/http.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { close, freePort, listen, testPki, until, type TestPki } from '../helpers/endpoints.js';
import { tempDir } from '../helpers/pki.js';
import { startProxy, stopAll } from '../helpers/process.js';
import { checkTargets } from '../helpers/request-targets.js';

const OPS = 'spiffe://test.example/ns/ops/sa/*';
let pki: TestPki;
const servers: net.Server[] = [];

before(async () => {
  pki = await testPki();
  await pki.issue({ profile: 'client', name: 'ops', names: { spiffeId: 'spiffe://test.example/ns/ops/sa/admin' } });
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
  await pki.ca.close();
});

/** A backend that records the request-target and XFCC of every request it gets. */
async function recordingBackend(onUpgrade?: (req: http.IncomingMessage, socket: net.Socket) => void) {
  const seen: string[] = [];
  const xfcc: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url ?? '');
    xfcc.push(String(req.headers['x-forwarded-client-cert']));
    res.end('ok');
  });
  if (onUpgrade) server.on('upgrade', onUpgrade);
  servers.push(server);
  return { port: await listen(server), seen, xfcc };
}

/** A proxy server in HTTP mode from a YAML config: `/admin` for ops identities only, the rest for the trust domain. */
async function httpProxy(backend: number, extra = '') {
  const port = await freePort();
  const dir = tempDir('mtls-http-policy-');
  const config = path.join(dir, 'proxy.yaml');
  fs.writeFileSync(
    config,
    `listeners:
  - name: web
    mode: server
    protocol: http
    listen: 127.0.0.1:${port}
    target: 127.0.0.1:${backend}
    cert: ${pki.file('server.crt')}
    key: ${pki.file('server.key')}
    ca: ${pki.file('ca.crt')}
    allow: [trust-domain:test.example]
    routes:
      - prefix: /admin
        allow: ['${OPS}']
${extra}`,
  );
  const p = await startProxy(['--config', config]);
  return { port, config, output: p.output };
}

const contextOf = (who: string) => tls.createSecureContext(clientTlsOptions(pki.creds(who), pki.bundle));

describe('HTTP route policy on the normalized path (CVE-2019-9901 class)', () => {
  it('proxy: 39 spellings of the request target; the backend sees exactly the path that was authorized', async () => {
    const b = await recordingBackend();
    const p = await httpProxy(b.port);
    await checkTargets(p.port, contextOf('billing'), b.seen);
    assert.match(p.output(), /"reason":"bad request target: the path holds an encoded '\/' \(%2F\)/);
  });

  it(
    'library: createMtlsHttpsServer with routes refuses the same spellings; the ' + 'handler sees the normalized path',
    async () => {
      const seen: string[] = [];
      const policy = compilePolicy({
        allow: ['trust-domain:test.example'],
        routes: [{ prefix: '/admin', allow: [OPS] }],
      });
      const server = createMtlsHttpsServer({ credentials: pki.creds('server'), policy }, (req, res) => {
        seen.push(req.url ?? '');
        res.end('ok');
      });
      servers.push(server);
      await checkTargets(await listen(server), contextOf('billing'), seen);
    },
  );

  it('an ops identity still reaches /admin, under its normalized name', async () => {
    const b = await recordingBackend();
    const p = await httpProxy(b.port);
    const { rawRequest } = await import('../helpers/request-targets.js');
    assert.equal(await rawRequest(p.port, contextOf('ops'), '/public/../admin/x'), 200);
    assert.deepEqual(b.seen, ['/admin/x']);
  });
});

describe('HTTP upgrade: raw bytes only after a real 101 (RFC 9110 7.8)', () => {
  /** An allowed caller sends an upgrade, then a smuggled request for /admin with a forged XFCC, in one write. */
  const smuggle = (port: number) =>
    new Promise<string>((resolve, reject) => {
      const c = tls.connect(
        { host: '127.0.0.1', port, secureContext: contextOf('billing'), servername: 'localhost' },
        () => {
          c.write(
            'GET /ws HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n' +
              'GET /admin/delete HTTP/1.1\r\nHost: b\r\nX-Forwarded-Client-Cert: URI=spiffe://test.example/ns/ops/sa/admin\r\n\r\n',
          );
        },
      );
      let got = '';
      c.setEncoding('latin1');
      c.on('data', (d: string) => (got += d));
      c.on('error', reject);
      c.on('close', () => resolve(got));
    });

  it(
    'a target that answers 200 to an upgrade: the answer goes back, the connection ' +
      'closes, the smuggled request never arrives',
    async () => {
      const b = await recordingBackend(); // no upgrade listener: Node answers the upgrade request as a plain one
      const p = await httpProxy(b.port);
      const got = await smuggle(p.port);
      assert.match(got, /^HTTP\/1\.1 200 /);
      assert.match(got, /\r\nconnection: close\r\n/i);
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(b.seen, ['/ws'], 'only the upgrade request reached the backend');
      assert.ok(
        b.xfcc.every((x) => !x.includes('/ns/ops/')),
        `a forged XFCC reached the backend: ${b.xfcc.join(' | ')}`,
      );
      await until(() => /"event":"upgrade-refused"/.test(p.output()), 5000, 'the refused upgrade in the log');
    },
  );

  it('a target that sends 200 with Upgrade headers is still not a 101: no relay', async () => {
    const b = await recordingBackend();
    const server = http.createServer((req, res) => {
      b.seen.push(req.url ?? '');
      res.writeHead(200, { Connection: 'Upgrade', Upgrade: 'websocket' });
      res.end('not switching');
    });
    servers.push(server);
    const p = await httpProxy(await listen(server));
    const got = await smuggle(p.port);
    assert.match(got, /^HTTP\/1\.1 200 [^]*not switching$/);
    assert.deepEqual(b.seen, ['/ws']);
  });

  it('an upgrade to a route the caller may not use is refused before the target hears of it', async () => {
    const b = await recordingBackend((_req, socket) => socket.destroy());
    const p = await httpProxy(b.port);
    const got = await new Promise<string>((resolve) => {
      const c = tls.connect(
        { host: '127.0.0.1', port: p.port, secureContext: contextOf('billing'), servername: 'localhost' },
        () => {
          c.write(
            'GET /public/%2e%2e/admin/ws HTTP/1.1\r\nHost: b\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
          );
        },
      );
      let s = '';
      c.on('data', (d) => (s += d));
      c.on('close', () => resolve(s));
    });
    assert.match(got, /^HTTP\/1\.1 403 /);
    assert.deepEqual(b.seen, []);
  });
});

describe('HTTP proxy config: a wrong type fails loudly', () => {
  it(
    'routes written as a mapping or a string, a route that is not a mapping: ' + 'one line naming the key and the file',
    async () => {
      const { parseProxyConfig } = await import('../../src/proxy/config-file.js');
      const base = (routes: string) =>
        `listeners:\n  - mode: server\n    protocol: http\n    listen: 127.0.0.1:1\n ` +
        `   target: 127.0.0.1:2\n    cert: a\n    key: b\n    ca: c\n    allow: [any]\n${routes}`;
      assert.throws(
        () => parseProxyConfig(base('    routes:\n      prefix: /admin\n      allow: [cn:ops]\n'), 'p.yaml'),
        /^MtlsError: p\.yaml\.listeners\[0\]\.routes: must be a list \(- prefix: \.\.\.\), not a mapping$/,
      );
      assert.throws(
        () => parseProxyConfig(base('    routes: /admin\n'), 'p.yaml'),
        /p\.yaml\.listeners\[0\]\.routes: must be a list .*not a string/,
      );
      assert.throws(
        () => parseProxyConfig(base('    routes:\n      - /admin\n'), 'p.yaml'),
        /p\.yaml\.listeners\[0\]\.routes\[0\]: must be a mapping/,
      );
      assert.throws(
        () => parseProxyConfig(base('    mergeSlashes: "no"\n'), 'p.yaml'),
        /mergeSlashes: must be true or false/,
      );
    },
  );
});
