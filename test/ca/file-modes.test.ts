import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { readCertificates } from '../../src/pki/certificate.js';
import { loadPrivateKey } from '../../src/pki/keys.js';
import { OID } from '../../src/pki/oid.js';
import { BIN, makeCert, openssl, ROOT, tempDir, type TestCert } from '../helpers/pki.js';

const run = (args: string[]) =>
  spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 30_000 });

describe('secrets that other users can read or change are refused', () => {
  it('a key file readable by others (proxy, serve, connect), a passphrase file, a CA home others can write', () => {
    const dir = tempDir('mtls-private-');
    const home = path.join(dir, 'ca');
    assert.equal(run(['ca', 'init', '--home', home, '--name', 'Private']).status, 0);
    assert.equal(run(['issue', 'server', 'srv', '--dns', 'localhost', '--home', home, '--out', dir]).status, 0);
    const key = path.join(dir, 'srv.key');
    assert.equal(fs.statSync(key).mode & 0o777, 0o600, 'issued keys are 0600');
    fs.chmodSync(key, 0o644);
    for (const args of [
      [
        'proxy',
        'server',
        '--listen',
        '127.0.0.1:0',
        '--target',
        '127.0.0.1:1',
        '--cert',
        path.join(dir, 'srv.crt'),
        '--key',
        key,
        '--ca',
        path.join(dir, 'ca.crt'),
        '--allow',
        'any',
      ],
      ['serve', '--port', '0', '--cert', path.join(dir, 'srv.crt'), '--key', key, '--ca', path.join(dir, 'ca.crt')],
      ['connect', '127.0.0.1:1', '--cert', path.join(dir, 'srv.crt'), '--key', key, '--ca', path.join(dir, 'ca.crt')],
    ]) {
      const r = run(args);
      assert.notEqual(r.status, 0, args[0]);
      assert.match(
        r.stderr,
        /key .*srv\.key can be read by other users \(mode 0644\); run chmod 600 /,
        `${args[0]}: ${r.stderr}`,
      );
    }
    fs.chmodSync(key, 0o640); // group read (ssl-cert, Kubernetes fsGroup) is allowed
    const pw = path.join(dir, 'pw');
    fs.writeFileSync(pw, 'a passphrase\n', { mode: 0o666 });
    fs.chmodSync(pw, 0o666);
    const p = run(['issue', 'client', 'c', '--home', home, '--out', dir, '--p12', '--p12-password-file', pw]);
    assert.match(p.stderr, /passphrase file .*pw can be changed by other users \(mode 0666\)/);
    fs.chmodSync(home, 0o777);
    const h = run(['issue', 'client', 'c', '--home', home, '--out', dir]);
    assert.notEqual(h.status, 0);
    assert.match(h.stderr, /CA home .* can be changed by other users \(mode 0777\); run chmod 700 /);
    fs.chmodSync(home, 0o700);
    fs.chmodSync(path.join(home, 'intermediate.key'), 0o604);
    assert.match(
      run(['issue', 'client', 'c', '--home', home, '--out', dir]).stderr,
      /CA key .*intermediate\.key can be read by other users/,
    );
  });
});

describe('a CA constrained to DNS names shuts every other name type', () => {
  it(
    '--permit-dns: an email or URI SAN is refused at issuance, and a relying ' +
      'party (openssl verify) refuses one signed anyway',
    () => {
      const dir = tempDir('mtls-constrained-');
      const home = path.join(dir, 'ca');
      assert.equal(
        run(['ca', 'init', '--home', home, '--name', 'Constrained', '--permit-dns', 'example.org']).status,
        0,
      );
      const e = run(['issue', 'client', 'mail', '--email', 'a@evil.example', '--home', home, '--out', dir]);
      assert.notEqual(e.status, 0);
      assert.match(e.stderr, /refused: .*a@evil\.example/);
      assert.equal(run(['issue', 'server', 'ok', '--dns', 'api.example.org', '--home', home, '--out', dir]).status, 0);
      // Signed with the intermediate's key directly, past our own checks: OpenSSL must refuse it by the constraints.
      const inter: TestCert = {
        cert: readCertificates(fs.readFileSync(path.join(home, 'intermediate.crt')), 'intermediate')[0]!,
        key: loadPrivateKey(fs.readFileSync(path.join(home, 'intermediate.key')), 'key'),
        pem: fs.readFileSync(path.join(home, 'intermediate.crt'), 'utf8'),
      };
      for (const san of [{ email: ['a@evil.example'] }, { uri: ['https://evil.example/x'] }]) {
        const leaf = makeCert({ cn: 'sneaky', issuer: inter, eku: [OID.clientAuth], dns: ['api.example.org'], ...san });
        fs.writeFileSync(path.join(dir, 'sneaky.pem'), leaf.pem);
        const v = openssl([
          'verify',
          '-CAfile',
          path.join(home, 'root.crt'),
          '-untrusted',
          path.join(home, 'intermediate.crt'),
          path.join(dir, 'sneaky.pem'),
        ]);
        assert.notEqual(v.status, 0, `openssl accepted ${JSON.stringify(san)}`);
        assert.match(v.stdout + v.stderr, /permitted subtree violation/);
      }
    },
  );
});
