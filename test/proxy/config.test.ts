import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { parseProxyConfig } from '../../src/proxy/config-file.js';
import { decodeProxyV2, encodeProxyV2, PP2 } from '../../src/proxy/proxy-protocol.js';
import { xfccValue } from '../../src/proxy/xfcc.js';
import { identityFromCertificate } from '../../src/identity/identity.js';
import { makeCert, mtls, tempDir } from '../helpers/pki.js';

const GOOD = `
admin: 127.0.0.1:9901
workers: 2
drainTimeout: 10s
listeners:
  - name: api-in
    mode: server
    listen: 0.0.0.0:8443
    target: 127.0.0.1:8080
    protocol: http
    cert: tls.crt
    key: tls.key
    ca: ca.crt
    allow: ["spiffe://acme.org/ns/*/sa/web"]
    routes:
      - prefix: /admin
        allow: ["spiffe://acme.org/ns/ops/sa/*"]
    limits: { handshakeTimeout: 5s, idleTimeout: 2m, maxConnections: 500, maxLifetime: 1h }
  - name: db-out
    mode: client
    listen: 127.0.0.1:15432
    target: db.acme.internal:5432
    cert: tls.crt
    key: tls.key
    ca: ca.crt
    expectSpiffeId: spiffe://acme.org/ns/data/sa/postgres
`;

describe('proxy config (YAML)', () => {
  it('reads several listeners of both kinds, with limits and routes', () => {
    const c = parseProxyConfig(GOOD, 'proxy.yaml');
    assert.equal(c.workers, 2);
    assert.equal(c.drainTimeoutMs, 10_000);
    assert.deepEqual(c.admin, { host: '127.0.0.1', port: 9901 });
    const [a, b] = c.listeners;
    assert.equal(a!.mode, 'server');
    assert.deepEqual(a!.limits, {
      handshakeTimeoutMs: 5000,
      idleTimeoutMs: 120_000,
      maxConnections: 500,
      maxLifetimeMs: 3600_000,
      requestHeadTimeoutMs: 30_000,
      bodyIdleTimeoutMs: 60_000,
      backendTimeoutMs: 60_000,
      maxRequestsPerIdentity: 64,
    });
    assert.equal(a!.mode === 'server' && a!.policy.routes?.[0]?.prefix, '/admin');
    assert.equal(b!.mode === 'client' && b!.expectSpiffeId, 'spiffe://acme.org/ns/data/sa/postgres');
    assert.deepEqual(b!.limits.handshakeTimeoutMs, 10_000, 'defaults');
    assert.equal(a!.mode === 'server' && a!.engine, 'auto', 'native for TCP when built, Node for HTTP');
  });

  const bad: [string, (y: string) => string, RegExp][] = [
    [
      'an unknown key (a typo must not be ignored in a security config)',
      (y) => y.replace('allow: ["spiffe', 'alow: ["spiffe'),
      /proxy\.yaml\.listeners\[0\]: unknown key 'alow'/,
    ],
    [
      'a plaintext target off the machine',
      (y) => y.replace('target: 127.0.0.1:8080', 'target: 10.0.0.5:8080'),
      /listeners\[0\]\.target: 10\.0\.0\.5:8080 is not on loopback or a unix socket.*unsafeTarget: true/,
    ],
    [
      'a plaintext client listener off loopback',
      (y) => y.replace('listen: 127.0.0.1:15432', 'listen: 0.0.0.0:15432'),
      /listeners\[1\]\.listen: 0\.0\.0\.0:15432 would accept plaintext from other machines/,
    ],
    ['a missing certificate', (y) => y.replace('    cert: tls.crt\n', ''), /listeners\[0\]\.cert: is required/],
    [
      'a bad duration',
      (y) => y.replace('handshakeTimeout: 5s', 'handshakeTimeout: soon'),
      /listeners\[0\]\.limits\.handshakeTimeout 'soon' is not a duration/,
    ],
    ['a bad rule', (y) => y.replace('"spiffe://acme.org/ns/*/sa/web"', '"bogus:x"'), /listeners\[0\]: /],
    [
      'two listeners with one name',
      (y) => y.replace('name: db-out', 'name: api-in'),
      /two listeners are named 'api-in'/,
    ],
    [
      'PROXY protocol in HTTP mode',
      (y) => y.replace('protocol: http', 'protocol: http\n    proxyProtocol: true'),
      /proxyProtocol: is for protocol: tcp/,
    ],
    [
      'the native engine in HTTP mode',
      (y) => y.replace('protocol: http', 'protocol: http\n    engine: native'),
      /listeners\[0\]\.engine: native is for protocol: tcp/,
    ],
    [
      'an unknown engine',
      (y) => y.replace('protocol: http', 'protocol: http\n    engine: fast'),
      /listeners\[0\]\.engine: must be native, node or auto/,
    ],
    [
      'crl and crlUrl together',
      (y) => y.replace('protocol: http', 'protocol: http\n    crl: crl.pem\n    crlUrl: ["http://ca/crl"]'),
      /listeners\[0\]: give crl or crlUrl, not both/,
    ],
    [
      'a crlUrl that is not http(s)',
      (y) => y.replace('protocol: http', 'protocol: http\n    crlUrl: ["file:///etc/crl.pem"]'),
      /listeners\[0\]\.crlUrl: 'file:\/\/\/etc\/crl\.pem' must be an http\(s\) URL/,
    ],
    [
      'a crlUrl with credentials in it',
      (y) => y.replace('protocol: http', 'protocol: http\n    crlUrl: ["http://user:secret@ca/crl"]'),
      /listeners\[0\]\.crlUrl: .* must be an http\(s\) URL without credentials/,
    ],
    [
      'crlRefresh without crlUrl',
      (y) => y.replace('protocol: http', 'protocol: http\n    crlRefresh: 5s'),
      /listeners\[0\]\.crlRefresh goes with crlUrl/,
    ],
    ['not YAML', () => 'listeners: [', /proxy\.yaml: not valid YAML/],
    ['a duplicate key', (y) => y.replace('workers: 2', 'workers: 2\nworkers: 3'), /not valid YAML/],
  ];
  for (const [what, edit, msg] of bad) {
    it(`refuses ${what} with one line naming the key`, () => {
      assert.throws(
        () => parseProxyConfig(edit(GOOD), 'proxy.yaml'),
        (err: Error) => {
          assert.match(err.message, msg);
          assert.ok(!err.message.includes('\n'), err.message);
          return true;
        },
      );
    });
  }

  it('reads crlUrl and crlRefresh', () => {
    const c = parseProxyConfig(
      GOOD.replace(
        'protocol: http',
        'protocol: http\n    crlUrl: ["http://ca:9080/crl/intermediate.crl"]\n    crlRefresh: 5s',
      ),
      'proxy.yaml',
    );
    const l = c.listeners[0]!;
    assert.ok(l.mode === 'server');
    assert.deepEqual(l.crlUrl, ['http://ca:9080/crl/intermediate.crl']);
    assert.equal(l.crlRefreshMs, 5000);
    assert.equal(l.crl, undefined);
  });

  it('CLI: --check validates (exit 0), a broken config exits 2 with the line', () => {
    const dir = tempDir();
    const ok = path.join(dir, 'ok.yaml');
    fs.writeFileSync(ok, GOOD);
    const r = mtls(['proxy', '--config', ok, '--check']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /ok \(api-in: server, db-out: client\)/);
    const broken = path.join(dir, 'bad.yaml');
    fs.writeFileSync(broken, GOOD.replace('target: 127.0.0.1:8080', 'target: 8.8.8.8:80'));
    const b = mtls(['proxy', '--config', broken, '--check']);
    assert.equal(b.status, 2);
    assert.match(b.stderr, /^mtls: error: .*bad\.yaml\.listeners\[0\]\.target: 8\.8\.8\.8:80 is not on loopback/);
  });
});

describe('PROXY protocol v2 and XFCC encoding', () => {
  const client = makeCert({
    cn: 'billing, "prod"',
    uri: ['spiffe://acme.org/ns/prod/sa/billing'],
    dns: ['billing.acme.org'],
  });
  const id = identityFromCertificate(client.cert);

  it('encodes addresses and identity TLVs that decode back (IPv4 and IPv6)', () => {
    const h = encodeProxyV2({
      source: { address: '10.1.2.3', port: 51000 },
      destination: { address: '127.0.0.1', port: 8443 },
      identity: id,
      tlsVersion: 'TLSv1.3',
      cipher: 'TLS_AES_128_GCM_SHA256',
      sni: 'api.acme.org',
      includeCertificate: true,
    });
    const d = decodeProxyV2(Buffer.concat([h, Buffer.from('payload')]))!;
    assert.equal(d.length, h.length);
    assert.deepEqual(d.source, { address: '10.1.2.3', port: 51000 });
    assert.equal(d.tlvs.get(PP2.MTLS_SPIFFE_ID)!.toString(), 'spiffe://acme.org/ns/prod/sa/billing');
    assert.equal(d.tlvs.get(PP2.AUTHORITY)!.toString(), 'api.acme.org');
    assert.deepEqual(d.tlvs.get(PP2.MTLS_CERT), client.cert.der);
    assert.equal(d.tlvs.get(PP2.MTLS_FINGERPRINT)!.toString('hex').toUpperCase(), id.fingerprint256.replace(/:/g, ''));
    assert.equal(d.ssl!.client & 0x03, 0x03, 'SSL + certificate in this connection');
    assert.equal(d.ssl!.verify, 0);
    assert.equal(d.ssl!.sub.get(PP2.SUBTYPE_SSL_VERSION)!.toString(), 'TLSv1.3');
    assert.equal(d.ssl!.sub.get(PP2.SUBTYPE_SSL_CN)!.toString(), 'billing, "prod"');
    const six = decodeProxyV2(
      encodeProxyV2({
        source: { address: '2001:db8::1', port: 1 },
        destination: { address: '::ffff:127.0.0.1', port: 2 },
      }),
    )!;
    assert.deepEqual(six.source, { address: '2001:db8:0:0:0:0:0:1', port: 1 });
    assert.deepEqual(six.destination, { address: '0:0:0:0:0:ffff:7f00:1', port: 2 });
  });

  it('rejects what is not a v2 header and waits for a truncated one', () => {
    assert.throws(() => decodeProxyV2(Buffer.from('GET / HTTP/1.1\r\n\r\n')), /not a PROXY v2 header/);
    const h = encodeProxyV2({
      source: { address: '1.2.3.4', port: 1 },
      destination: { address: '5.6.7.8', port: 2 },
      identity: id,
    });
    assert.equal(decodeProxyV2(h.subarray(0, h.length - 1)), undefined);
    assert.equal(decodeProxyV2(h.subarray(0, 5)), undefined);
  });

  it('XFCC quotes values with separators, as Envoy does', () => {
    const v = xfccValue(id, { by: 'spiffe://acme.org/ns/prod/sa/api' });
    // The DN is RFC 4514 (`CN=billing\, \"prod\"`); in XFCC its backslashes and quotes are escaped again.
    const subject = String.raw`Subject="CN=billing\\, \\\"prod\\\""`;
    assert.equal(
      v,
      `By=spiffe://acme.org/ns/prod/sa/api;Hash=${id.fingerprint256.replace(/:/g, '').toLowerCase()};${subject};URI=spiffe://acme.org/ns/prod/sa/billing;DNS=billing.acme.org`,
    );
  });
});

describe('proxy config: what --check must catch (issue 19)', () => {
  const server = (listen: string, extra = '') =>
    `  - mode: server\n    listen: "${listen}"\n    target: 127.0.0.1:9\n    ` +
    `cert: a\n    key: b\n    ca: c\n    allow: [any]\n${extra}`;
  it('two listeners on one socket written differently: 127.0.0.1:P, localhost:P, :P, 0.0.0.0:P', () => {
    for (const [a, b] of [
      ['127.0.0.1:8443', 'localhost:8443'],
      ['127.0.0.1:8443', ':8443'],
      ['0.0.0.0:8443', '127.0.0.2:8443'],
      ['[::]:8443', '127.0.0.1:8443'],
    ]) {
      assert.throws(
        () => parseProxyConfig(`listeners:\n${server(a!)}${server(b!)}`, 'p.yaml'),
        /p\.yaml: listeners 'server-0' \(.*\) and 'server-1' \(.*\) would listen on the same socket/,
        `${a} and ${b}`,
      );
    }
    assert.doesNotThrow(() =>
      parseProxyConfig(`listeners:\n${server('127.0.0.1:8443')}${server('127.0.0.2:8443')}`, 'p.yaml'),
    );
  });

  it('a unix-socket target in a directory any user can write is refused without unsafeTarget', () => {
    const dir = tempDir('mtls-open-dir-');
    fs.chmodSync(dir, 0o777);
    const target = (extra: string) =>
      `listeners:\n  - mode: server\n    listen: 127.0.0.1:1\n    target: unix:${dir}/app.sock\n ` +
      `   cert: a\n    key: b\n    ca: c\n    allow: [any]\n${extra}`;
    assert.throws(
      () => parseProxyConfig(target(''), 'p.yaml'),
      new RegExp(`target: its directory ${dir} can be written by any user, so another user could receive the requests`),
    );
    assert.doesNotThrow(() => parseProxyConfig(target('    unsafeTarget: true\n'), 'p.yaml'));
    fs.chmodSync(dir, 0o1777); // sticky, as /tmp: others cannot replace our socket
    assert.doesNotThrow(() => parseProxyConfig(target(''), 'p.yaml'));
  });
});

describe('a server listener with no allow rule (issue 16)', () => {
  const yaml = (extra: string) =>
    `listeners:\n  - mode: server\n    listen: 127.0.0.1:1\n    target: 127.0.0.1:2\n ` +
    `   cert: a\n    key: b\n    ca: c\n${extra}`;
  it('is refused unless denyAll says so; denyAll with allow rules is a contradiction', () => {
    assert.throws(
      () => parseProxyConfig(yaml(''), 'p.yaml'),
      /p\.yaml\.listeners\[0\]: no allow rule, so every client would be refused; add one .* or set denyAll: true \(--deny-all\)/,
    );
    assert.doesNotThrow(() => parseProxyConfig(yaml('    denyAll: true\n'), 'p.yaml'));
    assert.doesNotThrow(() =>
      parseProxyConfig(yaml('    protocol: http\n    routes: [{ prefix: /x, allow: [any] }]\n'), 'p.yaml'),
    );
    assert.throws(
      () => parseProxyConfig(yaml('    denyAll: true\n    allow: [any]\n'), 'p.yaml'),
      /denyAll: contradicts the allow rules/,
    );
    const r = mtls([
      'proxy',
      'server',
      '--listen',
      '127.0.0.1:0',
      '--target',
      '127.0.0.1:1',
      '--cert',
      'a',
      '--key',
      'b',
      '--ca',
      'c',
    ]);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /no allow rule, so every client would be refused/);
  });
});
