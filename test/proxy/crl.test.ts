import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { compilePolicy } from '../../src/identity/policy.js';
import { parseCertificate } from '../../src/pki/certificate.js';
import { crlSetProblem, readCrls } from '../../src/pki/crl.js';
import { loadCredentials } from '../../src/tls/credentials.js';
import { createMtlsServer } from '../../src/tls/server.js';
import { close, freePort, listen, until } from '../helpers/endpoints.js';
import { crlPki, type CrlPki } from '../helpers/crl-pki.js';
import { BIN, keyPem, makeCert, opensslCrl, tempDir, type TestCert } from '../helpers/pki.js';
import { crlProxyArgs, startProxy, stopAll } from '../helpers/process.js';

let pki: CrlPki;
let dir: string;
let root: TestCert, inter: TestCert, alice: TestCert, bob: TestCert, server: TestCert;
let files: { ca: string; cert: string; key: string };
/** CRLs of the intermediate (revoking bob) and of the root, in one file. */
let bothCrls: string;
const servers: net.Server[] = [];

before(() => {
  pki = crlPki();
  ({ dir, root, inter, alice, bob, server, files } = pki);
  bothCrls = pki.crls([bob]);
});
after(async () => {
  stopAll();
  await Promise.all(servers.map(close));
});

const clientContext = (c: TestCert) => pki.clientContext(c);

/** One connection as `who`: did data come back through the server (admitted), or was it closed without any? */
function admitted(port: number, who: TestCert, http1 = false): Promise<boolean> {
  return new Promise((resolve) => {
    const c = tls.connect(
      { host: '127.0.0.1', port, secureContext: clientContext(who), servername: 'localhost' },
      () => {
        if (http1) c.write('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
      },
    );
    let data = '';
    c.on('data', (d) => (data += d));
    c.on('error', () => undefined);
    c.on('close', () => resolve(/hi/.test(data)));
  });
}

const bad: Record<string, () => string> = {
  empty: () => {
    const f = path.join(dir, 'empty.crl');
    fs.writeFileSync(f, '');
    return f;
  },
  garbage: () => {
    const f = path.join(dir, 'garbage.crl');
    fs.writeFileSync(f, '-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n');
    return f;
  },
  'a certificate': () => files.ca,
  'wrongly signed': () => {
    const impostor = makeCert({ cn: 'CRL Root', ca: true }); // same name, another key
    const f = path.join(dir, 'forged.crl');
    fs.writeFileSync(
      f,
      fs.readFileSync(opensslCrl(inter, [bob])) + fs.readFileSync(opensslCrl(impostor, [])).toString(),
    );
    return f;
  },
  'missing the root CRL': () => opensslCrl(inter, [bob]),
};

describe('CRL files are checked before they are enforced', () => {
  it(
    'readCrls and crlSetProblem: empty, garbage, not a CRL, wrongly signed, foreign, ' + 'expired, a CA without a CRL',
    () => {
      const anchors = [parseCertificate(root.cert.der)];
      const chain = [parseCertificate(inter.cert.der)];
      const now = new Date();
      assert.throws(() => readCrls(Buffer.alloc(0), 'f'), /f is empty; expected PEM CRLs/);
      assert.throws(() => readCrls(fs.readFileSync(bad['garbage']!()), 'f'), /f is not a valid X\.509 CRL/);
      assert.throws(() => readCrls(fs.readFileSync(files.ca), 'f'), /holds a 'CERTIFICATE' block/);
      assert.throws(() => readCrls(Buffer.from('hello'), 'f'), /not a valid X\.509 CRL/);
      const ok = readCrls(fs.readFileSync(bothCrls), 'f');
      assert.equal(ok.length, 2);
      assert.ok(ok[0]!.revoked.has(bob.cert.serialHex));
      assert.equal(crlSetProblem(ok, anchors, chain, now, 'f'), undefined);
      assert.match(
        crlSetProblem(readCrls(fs.readFileSync(bad['wrongly signed']!()), 'f'), anchors, chain, now, 'f')!,
        /the CRL of 'CN=CRL Root' is not signed by that CA's key/,
      );
      assert.match(
        crlSetProblem(ok, anchors, [], now, 'f')!,
        /'CN=CRL Issuing' is from a CA that is neither in the trust bundle nor in our certificate chain/,
      );
      assert.match(
        crlSetProblem(readCrls(fs.readFileSync(bad['missing the root CRL']!()), 'f'), anchors, chain, now, 'f')!,
        /no CRL for the CA 'CN=CRL Root'/,
      );
      const expired = readCrls(
        fs.readFileSync(
          opensslCrl(root, [], undefined, {
            lastUpdate: new Date(Date.now() - 86400e3 * 3),
            nextUpdate: new Date(Date.now() - 86400e3),
          }),
        ),
        'f',
      );
      assert.match(crlSetProblem(expired, anchors, chain, now, 'f')!, /the CRL of 'CN=CRL Root' expired at/);
    },
  );

  for (const [engine, extra] of [
    ['native', []],
    ['node', []],
    ['http', ['--http']],
  ] as const) {
    it(
      `proxy (${engine}): an unusable CRL file stops the start-up with one line; ` + `both CAs' CRLs in one file work`,
      async () => {
        const backend = net.createServer((s) => {
          s.on('error', () => undefined);
          s.end(engine === 'http' ? 'HTTP/1.1 200 OK\r\ncontent-length: 3\r\nconnection: close\r\n\r\nhi\n' : 'hi\n');
        });
        servers.push(backend);
        const target = await listen(backend);
        const args = (port: number, crl: string) => [
          'proxy',
          ...crlProxyArgs(
            port,
            `127.0.0.1:${target}`,
            files,
            crl,
            ...(engine === 'http' ? [] : ['--engine', engine]),
            ...extra,
          ),
        ];
        for (const [what, make] of Object.entries(bad)) {
          const r = spawnSync(process.execPath, [BIN, ...args(await freePort(), make())], {
            encoding: 'utf8',
            timeout: 20_000,
          });
          assert.notEqual(r.status, 0, `${what}: the proxy must not start (${r.stdout})`);
          assert.match(
            r.stderr,
            /CRL file .*(empty|not a valid X\.509 CRL|holds a 'CERTIFICATE' block|not signed by that CA's key|no CRL for the CA)/,
            `${what}: ${r.stderr}`,
          );
          assert.equal(r.stderr.trim().split('\n').length, 1, `${what}: one line: ${r.stderr}`);
        }
        const port = await freePort();
        const crl = path.join(tempDir('mtls-crl-live-'), 'crl.pem');
        fs.copyFileSync(bothCrls, crl);
        const p = await startProxy(args(port, crl).slice(1));
        assert.equal(await admitted(port, alice, engine === 'http'), true, 'alice is not revoked');
        assert.equal(await admitted(port, bob, engine === 'http'), false, 'bob is revoked by the intermediate');
        // A bad CRL on reload: logged once, the old CRLs stay in force.
        fs.writeFileSync(crl, '');
        await until(() => /"event":"reload-failed"/.test(p.output()), 5000, 'the failed reload');
        await new Promise((r) => setTimeout(r, 600));
        assert.equal(await admitted(port, bob, engine === 'http'), false, 'bob is still revoked');
        fs.writeFileSync(crl, ''); // the same bad content again: no new line
        await new Promise((r) => setTimeout(r, 400));
        assert.equal(
          p.output().match(/"event":"reload-failed"/g)?.length,
          1,
          'a failed reload is logged once per change',
        );
        assert.equal(await admitted(port, alice, engine === 'http'), true, 'alice still gets in');
      },
    );
  }

  it("createMtlsServer: an empty or forged CRL throws; the two CAs' CRLs as one string are all enforced", async () => {
    const credentials = loadCredentials({ cert: server.pem + inter.pem, key: keyPem(server), ca: root.pem });
    const policy = compilePolicy({ allow: ['trust-domain:crl.example'] });
    assert.throws(() => createMtlsServer({ credentials, policy, crl: '' }), /CRL is empty/);
    assert.throws(
      () => createMtlsServer({ credentials, policy, crl: fs.readFileSync(bad['wrongly signed']!()) }),
      /not signed by that CA's key/,
    );
    const s = createMtlsServer({ credentials, policy, crl: fs.readFileSync(bothCrls, 'utf8') }, (sock) =>
      sock.end('hi\n'),
    );
    servers.push(s);
    const port = await listen(s);
    assert.equal(await admitted(port, alice), true);
    assert.equal(await admitted(port, bob), false);
  });
});
