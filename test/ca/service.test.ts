/**
 * The CA as a service (issue 15): `mtls ca serve`, `mtls ca token`, `mtls ca bootstrap` and `mtls agent`, each a
 * real process over loopback. Enrollment with one-time tokens, renewal over mTLS, the refusals (each with its own
 * code), revocation, the inventory, replicas on one inventory, and a SIGKILL in the middle of a burst.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { makeToken, provisionerKey, tokenAudience } from '../../src/ca/tokens.js';
import { exchange } from '../../src/io/http-exchange.js';
import { exportPrivateKey, generateKeyPair } from '../../src/pki/keys.js';
import { crlValidity } from '../../src/pki/crl-writer.js';
import { checkLeafNames } from '../../src/pki/profiles.js';
import { SqliteStore } from '../../src/store/sqlite.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { api, csr, enroll, startCa, token, type Answer, type Ca } from '../helpers/ca-service.js';
import { mtls, mtlsAsync, openssl } from '../helpers/pki.js';
import { stopAll } from '../helpers/process.js';

after(stopAll);

describe('mtls ca serve: enrollment, renewal and their refusals', () => {
  let ca: Ca;
  before(async () => {
    ca = await startCa('Svc', ['--admin', 'spiffe://svc.example/admin']);
  });

  it('publishes the CRLs it serves at start when there are none (a home from before ca init published them)', async () => {
    const home = path.join(ca.dir, 'older');
    await (await CertificateAuthority.init({ home, name: 'Older' })).close();
    fs.rmSync(path.join(home, 'crl'), { recursive: true });
    const older = await startCa('', [], home);
    try {
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        const r = await exchange(new URL('/v1/crl/intermediate.crl', older.url), {
          timeoutMs: 5000,
          maxBytes: 1 << 20,
          tls: clientTlsOptions(undefined, older.root),
        });
        status = r.status;
        if (status === 200) assert.ok(crlValidity(r.body).nextUpdate!.getTime() > Date.now());
        else await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal(status, 200, 'a CRL to download, not "no CRL published yet"');
    } finally {
      older.stop();
    }
  });

  it('bootstrap trusts the root only with its fingerprint; an agent enrolls with a token and a replay is refused', async () => {
    const out = path.join(ca.dir, 'boot.crt');
    const wrong = mtls(['ca', 'bootstrap', '--ca-url', ca.url, '--fingerprint', 'ab'.repeat(32), '--out', out]);
    assert.equal(wrong.status, 1, wrong.stderr);
    assert.match(wrong.stderr, /serves no root with fingerprint abab/);
    assert.equal(fs.existsSync(out), false, 'nothing written for a root that does not match');
    const good = mtls(['ca', 'bootstrap', '--ca-url', ca.url, '--fingerprint', ca.fingerprint, '--out', out]);
    assert.equal(good.status, 0, good.stderr);
    assert.equal(fs.readFileSync(out, 'utf8'), ca.root);

    const t = token(ca, ['billing', '--spiffe-id', 'spiffe://svc.example/billing', '--validity', '1h']);
    const dir = path.join(ca.dir, 'billing');
    const agent = (d: string, extra: string[] = []) =>
      mtlsAsync(['agent', '--ca-url', ca.url, '--root', out, '--out', d, '--once', ...extra]);
    const first = await agent(dir, ['--token', t]);
    assert.equal(first.status, 0, first.stderr);
    assert.equal(fs.statSync(path.join(dir, 'billing.key')).mode & 0o777, 0o600);
    const v = openssl([
      'verify',
      '-CAfile',
      ca.rootFile,
      '-untrusted',
      path.join(dir, 'billing.crt'),
      '-purpose',
      'sslclient',
      path.join(dir, 'billing.crt'),
    ]);
    assert.match(v.stdout, /OK/, v.stderr);
    const text = openssl(['x509', '-in', path.join(dir, 'billing.crt'), '-noout', '-text']).stdout;
    assert.match(text, /URI:spiffe:\/\/svc\.example\/billing/);
    const replay = await agent(path.join(ca.dir, 'other'), ['--token', t]);
    assert.equal(replay.status, 1);
    assert.match(replay.stderr, /TOKEN_SPENT/);
    assert.equal(fs.existsSync(path.join(ca.dir, 'other', 'billing.crt')), false);
    // Fresh: --once does nothing; --force renews, with a new key, the same names, and the old one superseded.
    const before = fs.readFileSync(path.join(dir, 'billing.crt'), 'utf8');
    const fresh = await agent(dir, ['--name', 'billing']);
    assert.equal(fresh.status, 0, fresh.stderr);
    assert.equal(fs.readFileSync(path.join(dir, 'billing.crt'), 'utf8'), before);
    const renewed = await agent(dir, ['--name', 'billing', '--force']);
    assert.equal(renewed.status, 0, renewed.stderr);
    assert.notEqual(fs.readFileSync(path.join(dir, 'billing.crt'), 'utf8'), before);
    const store = new SqliteStore(path.join(ca.home, 'inventory.db'));
    try {
      const rows = (await store.list()).filter((r) => r.spiffeId === 'spiffe://svc.example/billing');
      assert.equal(rows.length, 2);
      const old = rows.find((r) => r.supersededBy)!;
      assert.equal(old.supersededBy, rows.find((r) => r !== old)!.serial);
    } finally {
      await store.close();
    }
  });

  it('refuses expired tokens, tokens of another CA, tokens that are not JWTs and CSRs asking for more names', async () => {
    const key = provisionerKey(ca.home, true);
    const authority = await CertificateAuthority.open(ca.home);
    const aud = tokenAudience(authority.root.fingerprint256);
    await authority.close();
    const grant = {
      name: 'late',
      profile: 'server' as const,
      names: checkLeafNames('server', { dns: ['late.svc.example'] }),
      validityMs: 3600e3,
    };
    const expired = await makeToken(key, aud, grant, 60_000, new Date(Date.now() - 10 * 60_000));
    const c = csr('late');
    const a = await api(ca, '/v1/sign', { body: { csr: c.csr, token: expired } });
    assert.equal(a.status, 401);
    assert.equal(a.json.error!.code, 'TOKEN_EXPIRED');

    const foreign = await makeToken(key, tokenAudience('00'.repeat(32)), grant);
    const b = await api(ca, '/v1/sign', { body: { csr: c.csr, token: foreign } });
    assert.equal(b.json.error!.code, 'TOKEN_INVALID');
    assert.match(b.json.error!.message, /another CA/);

    // Signed by a key that is not the provisioner's.
    const forged = await makeToken(generateKeyPair('ec-p256').privateKey, aud, grant);
    const f = await api(ca, '/v1/sign', { body: { csr: c.csr, token: forged } });
    assert.equal(f.json.error!.code, 'TOKEN_INVALID');
    const unsigned = Buffer.from('{"alg":"none"}').toString('base64url') + '.' + forged.split('.')[1] + '.';
    assert.equal(
      (await api(ca, '/v1/sign', { body: { csr: c.csr, token: unsigned } })).json.error!.code,
      'TOKEN_INVALID',
    );

    const good = await makeToken(key, aud, grant);
    const greedy = csr('late', ['late.svc.example', 'bank.svc.example']);
    const g = await api(ca, '/v1/sign', { body: { csr: greedy.csr, token: good } });
    assert.equal(g.status, 403);
    assert.equal(g.json.error!.code, 'NAME_NOT_GRANTED');
    assert.match(g.json.error!.message, /DNS:bank\.svc\.example/);
    // The refused request did not spend the token.
    const ok = await api(ca, '/v1/sign', { body: { csr: csr('late', ['late.svc.example']).csr, token: good } });
    assert.equal(ok.status, 201, JSON.stringify(ok.json));
  });

  it('renewal refuses revoked certificates, certificates of another CA, expired ones, and no certificate', async () => {
    const victim = await enroll(ca, 'victim');
    const self = await api(ca, '/v1/revoke', { body: { serial: victim.serial, reason: 'keyCompromise' }, as: victim });
    assert.equal(self.status, 200, JSON.stringify(self.json));
    const r = await api(ca, '/v1/renew', { body: { csr: csr('victim').csr }, as: victim });
    assert.equal(r.status, 401);
    assert.equal(r.json.error!.code, 'CERT_REVOKED');

    const other = await startCa('Other');
    try {
      const stranger = await enroll(other, 'stranger');
      const s = await api(ca, '/v1/renew', { body: { csr: csr('stranger').csr }, as: { ...stranger } }).catch(
        (e: Error) => ({ status: 0, json: { error: { code: e.message, message: '' } } }),
      );
      assert.equal(s.json.error!.code, 'CERT_UNTRUSTED');
    } finally {
      other.stop();
    }

    // A certificate that expired a minute ago (issued in the past by the same CA).
    const authority = await CertificateAuthority.open(ca.home);
    let expired;
    try {
      expired = await authority.issue({
        profile: 'spiffe',
        name: 'gone',
        names: { spiffeId: 'spiffe://svc.example/gone' },
        validityMs: 60_000,
        now: new Date(Date.now() - 5 * 60_000),
      });
    } finally {
      await authority.close();
    }
    const e = await api(ca, '/v1/renew', {
      body: { csr: csr('gone').csr },
      as: { cert: expired.chainPem, key: exportPrivateKey(expired.privateKey!) },
    });
    assert.equal(e.status, 401);
    assert.equal(e.json.error!.code, 'CERT_EXPIRED');
    const none = await api(ca, '/v1/renew', { body: { csr: csr('x').csr } });
    assert.equal(none.json.error!.code, 'NO_CLIENT_CERT');
  });

  it('revocation: self or admin only; the inventory lists and pages for admins; errors are one JSON shape', async () => {
    const a = await enroll(ca, 'alice');
    const b = await enroll(ca, 'bob');
    const refused = await api(ca, '/v1/revoke', { body: { serial: b.serial }, as: a });
    assert.equal(refused.status, 403);
    assert.equal(refused.json.error!.code, 'PEER_NOT_ALLOWED');
    const admin = await enroll(ca, 'admin');
    const done = await api(ca, '/v1/revoke', { body: { serial: b.serial, reason: 'superseded' }, as: admin });
    assert.equal(done.status, 200, JSON.stringify(done.json));
    assert.equal(done.json['status'], 'revoked');
    const again = await api(ca, '/v1/revoke', { body: { serial: b.serial }, as: admin });
    assert.equal(again.json.error!.code, 'NOT_REVOCABLE');
    // Published at once: the CRL the service serves lists it.
    const crlFile = path.join(ca.dir, 'i.crl');
    const crl = await exchange(new URL('/v1/crl/intermediate.crl', ca.url), {
      timeoutMs: 5000,
      maxBytes: 1 << 20,
      tls: clientTlsOptions(undefined, ca.root),
    });
    fs.writeFileSync(crlFile, crl.body);
    assert.match(
      openssl(['crl', '-inform', 'DER', '-in', crlFile, '-noout', '-text']).stdout,
      new RegExp(b.serial, 'i'),
    );

    const notAdmin = await api(ca, '/v1/certificates', { as: a });
    assert.equal(notAdmin.json.error!.code, 'PEER_NOT_ALLOWED');
    const revoked = await api(ca, '/v1/certificates?status=revoked', { as: admin });
    const serials = (revoked.json['items'] as { serial: string }[]).map((x) => x.serial);
    assert.ok(serials.includes(b.serial));
    assert.ok(!serials.includes(a.serial));
    const seen: string[] = [];
    let next: string | null = '';
    for (let pages = 0; next !== null && pages < 50; pages++) {
      const p: Answer = await api(ca, `/v1/certificates?limit=2${next ? `&after=${next}` : ''}`, { as: admin });
      assert.equal(p.status, 200, JSON.stringify(p.json));
      seen.push(...(p.json['items'] as { serial: string }[]).map((x) => x.serial));
      next = p.json['next'] as string | null;
    }
    assert.equal(new Set(seen).size, seen.length, 'no certificate on two pages');
    assert.ok(seen.includes(a.serial) && seen.includes(b.serial) && seen.includes(admin.serial));
    const byIdentity = await api(ca, '/v1/certificates?identity=spiffe://svc.example/alice', { as: admin });
    assert.deepEqual(
      (byIdentity.json['items'] as { serial: string }[]).map((x) => x.serial),
      [a.serial],
    );

    const unknown = await api(ca, '/v1/nothing');
    assert.equal(unknown.status, 404);
    assert.equal(unknown.json.error!.code, 'NOT_FOUND');
    const bad = await api(ca, '/v1/sign', { raw: Buffer.from('{not json') });
    assert.equal(bad.status, 400);
    assert.equal(bad.json.error!.code, 'BAD_INPUT');
    const big = await api(ca, '/v1/sign', { raw: Buffer.alloc(100_000, 0x20) }).catch(() => ({
      status: 413,
      json: {},
    }));
    assert.equal(big.status, 413);
    // A page size out of range is refused (a negative LIMIT means no limit at all to SQLite).
    for (const limit of ['-1', '0', 'x', '1.5']) {
      const page = await api(ca, `/v1/certificates?limit=${limit}`, { as: admin });
      assert.equal(page.status, 400, `limit=${limit}: ${JSON.stringify(page.json)}`);
      assert.equal(page.json.error!.code, 'BAD_INPUT');
    }
    const health = await api(ca, '/healthz');
    assert.deepEqual(health.json, { status: 'ok' });
    const ready = await api(ca, '/readyz');
    assert.equal(ready.status, 200);
    const metrics = await exchange(new URL('/metrics', ca.url), {
      timeoutMs: 5000,
      maxBytes: 1 << 20,
      tls: clientTlsOptions(undefined, ca.root),
    });
    assert.match(metrics.body.toString(), /mtls_ca_issued_total\{how="sign"\} \d+/);
  });
});

describe('mtls ca serve before any token was made', () => {
  it('refuses enrollment as TOKEN_INVALID (not an internal error) while the CA has no provisioner key', async () => {
    const ca = await startCa('NoTokens');
    try {
      const a = await api(ca, '/v1/sign', { body: { csr: csr('x').csr, token: 'a.b.c' } });
      assert.equal(a.status, 401, JSON.stringify(a.json));
      assert.equal(a.json.error!.code, 'TOKEN_INVALID');
      assert.match(a.json.error!.message, /no enrollment token yet/);
    } finally {
      ca.stop();
    }
  });
});
