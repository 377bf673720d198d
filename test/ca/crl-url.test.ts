/**
 * CRLs fetched from URLs (issue 14): `mtls serve --crl-url` and `mtls proxy server --crl-url` take the CA's
 * published CRLs over HTTP, poll them with a conditional GET, and enforce a revocation made with `mtls revoke`
 * within seconds, without a restart. A fetch that fails or returns garbage keeps the CRLs in force; a URL that does
 * not answer at start-up stops the server with one line.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import tls from 'node:tls';
import { before, describe, it } from 'node:test';
import { crlPaths } from '../../src/ca/revocation.js';
import { CrlFetcher, type CrlFetchEvent } from '../../src/tls/crl-fetch.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { freePort, listen, tlsAttempt, until } from '../helpers/endpoints.js';
import { BIN, mtls, mtlsAsync } from '../helpers/pki.js';
import { startProcess, trackServers } from '../helpers/process.js';
import { urlCa, type UrlCa } from '../helpers/url-ca.js';

const servers = trackServers();

describe('CRLs from URLs', () => {
  let pki: UrlCa;
  let env: UrlCa['env'];
  let base = '';
  let home = '';
  const f = (n: string) => pki.file(n);
  const context = (n: string) => tls.createSecureContext(clientTlsOptions(pki.creds(n), pki.bundle));

  before(async () => {
    pki = await urlCa('Cu', { servers: ['web'], clients: ['alice', 'bob'] });
    ({ env, base, home } = pki);
    assert.equal(mtls(['ca', 'crl'], { env }).status, 0);
    await pki.startResponder();
  });

  it('mtls serve and mtls proxy server (both engines) refuse a client revoked after they started, within 5 s', async () => {
    const urls = [`${base}/crl/intermediate.crl`, `${base}/crl/root.crl`];
    const web = ['--cert', f('web.crt'), '--key', f('web.key')];
    const targetServer = http.createServer((_q, res) => res.end('ok'));
    servers.push(targetServer);
    const targetPort = await listen(targetServer);
    const launch = async (make: (port: number) => string[]) => {
      const port = await freePort();
      await startProcess(process.execPath, [BIN, ...make(port)], /listening/, env);
      return port;
    };
    const allow = ['--allow', 'cn:alice', '--allow', 'cn:bob'];
    const crl = ['--crl-url', ...urls, '--crl-refresh', '1s'];
    const serve = await launch((p) => ['serve', '--port', String(p), ...web, ...allow, ...crl]);
    const proxies = await Promise.all(
      ['native', 'node'].map((engine) =>
        launch((p) => [
          ...pki.proxyArgs('server', p, `127.0.0.1:${targetPort}`, 'web'),
          ...allow,
          ...crl,
          '--engine',
          engine,
        ]),
      ),
    );
    // The same from a YAML config, as a cluster of two workers: each fetches the CRLs into a file of its own.
    const yamlPort = await freePort();
    const yaml = `${pki.dir}/proxy.yaml`;
    const cli = pki.proxyArgs('server', 0, '127.0.0.1:1', 'web');
    const bundle = cli[cli.indexOf('--ca') + 1]!;
    fs.writeFileSync(
      yaml,
      [
        'workers: 2',
        'listeners:',
        '  - name: crl-url',
        '    mode: server',
        `    listen: 127.0.0.1:${yamlPort}`,
        `    target: 127.0.0.1:${targetPort}`,
        `    cert: ${f('web.crt')}`,
        `    key: ${f('web.key')}`,
        `    ca: ${bundle}`,
        '    allow: ["cn:alice", "cn:bob"]',
        `    crlUrl: [${urls.map((u) => JSON.stringify(u)).join(', ')}]`,
        '    crlRefresh: 1s',
      ].join('\n'),
    );
    await startProcess(process.execPath, [BIN, 'proxy', '--config', yaml], /("event":"listening"[^\n]*\n[^]*){2}/, env);
    proxies.push(yamlPort);
    const through = async (port: number, who: string) =>
      (await tlsAttempt(port, context(who), { send: 'GET / HTTP/1.0\r\n\r\n' })).data;
    for (const p of [serve, ...proxies]) assert.notEqual(await through(p, 'bob'), '', `bob gets in at ${p} before`);
    pki.revoke('bob');
    const t0 = Date.now();
    for (const p of [serve, ...proxies]) {
      while ((await through(p, 'bob')) !== '') {
        assert.ok(Date.now() - t0 < 5000, `bob still gets in at ${p} 5 s after his revocation`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    for (const p of [serve, ...proxies]) assert.notEqual(await through(p, 'alice'), '', `alice still gets in at ${p}`);
  });

  it('mtls serve --crl-url that does not answer at start-up: one line, exit 1, no server', async () => {
    const r = await mtlsAsync(
      [
        'serve',
        '--port',
        '0',
        '--cert',
        f('web.crt'),
        '--key',
        f('web.key'),
        '--allow',
        'cn:bob',
        '--crl-url',
        'http://127.0.0.1:1/crl/x.crl',
      ],
      { env },
    );
    assert.equal(r.status, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /the CRL at http:\/\/127\.0\.0\.1:1\/crl\/x\.crl cannot be reached \(ECONNREFUSED\)/);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  });

  it('CrlFetcher: a conditional GET while unchanged; garbage and errors keep the CRLs in force', async () => {
    const crl = fs.readFileSync(crlPaths(home).intermediate);
    let answer: 'crl' | 'garbage' | '500' = 'crl';
    const seen: (string | undefined)[] = [];
    const server = http.createServer((req, res) => {
      seen.push(req.headers['if-none-match']);
      if (answer === '500') return void res.writeHead(500).end();
      if (answer === 'garbage') return void res.writeHead(200).end('<html>hello</html>');
      if (req.headers['if-none-match'] === '"v1"') return void res.writeHead(304).end();
      res.writeHead(200, { etag: '"v1"' }).end(crl);
    });
    servers.push(server);
    const port = await listen(server);
    const events: CrlFetchEvent[] = [];
    const fetcher = new CrlFetcher([`http://127.0.0.1:${port}/c.crl`], {
      intervalMs: 1000,
      onEvent: (e) => events.push(e),
    });
    const first = await fetcher.fetchAll();
    assert.match(first.toString(), /^-----BEGIN X509 CRL-----/);
    const changes: Buffer[] = [];
    fetcher.watch((pem) => changes.push(pem));
    await until(() => seen.length >= 2, 5000, 'a second poll');
    assert.equal(seen[1], '"v1"', 'the second poll is conditional');
    answer = 'garbage';
    await until(() => events.some((e) => e.event === 'crl-fetch-failed'), 5000, 'a garbage answer');
    assert.match(
      (events.find((e) => e.event === 'crl-fetch-failed') as { reason: string }).reason,
      /not a valid X\.509 CRL/,
    );
    answer = '500';
    await until(() => events.filter((e) => e.event === 'crl-fetch-failed').length >= 2, 5000, 'an HTTP error');
    assert.deepEqual(changes, [], 'neither garbage nor an error replaced the CRLs in force');
    fetcher.stop();
    assert.throws(() => new CrlFetcher(['file:///etc/passwd']), /must be an http\(s\) URL/);
  });
});
