/**
 * Issue 15: the issuance policy per profile (HOME/policy.json, `mtls ca policy set`): default and maximum lifetimes
 * and the names a token may grant, applied by `mtls ca token` and by a running `mtls ca serve` at its next request.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { makeToken, provisionerKey, tokenAudience } from '../../src/ca/tokens.js';
import { readCertificates } from '../../src/pki/certificate.js';
import { checkLeafNames } from '../../src/pki/profiles.js';
import { api, csr, startCa, token, type Ca } from '../helpers/ca-service.js';
import { mtls } from '../helpers/pki.js';
import { stopAll } from '../helpers/process.js';

after(stopAll);

const H = 3600e3;

/** A token signed in-process, as `mtls ca token` would make it without its policy check (an older token). */
const grant = (ca: Ca, name: string, profile: 'spiffe' | 'server', names: object, validityMs: number) =>
  makeToken(provisionerKey(ca.home, true), tokenAudience(ca.fingerprint), {
    name,
    profile,
    names: checkLeafNames(profile, names),
    validityMs,
  });

const policySet = (ca: Ca, args: string[]) => {
  const r = mtls(['ca', 'policy', 'set', ...args], { env: ca.env });
  assert.equal(r.status, 0, r.stderr);
};

const lifetimeMs = (pem: string) => {
  const leaf = readCertificates(Buffer.from(pem), 'answer')[0]!;
  return leaf.notAfter.getTime() - leaf.notBefore.getTime();
};

describe('issuance policy per profile', () => {
  it('a running service applies names and lifetimes at the next request; renewals follow a tightened policy', async () => {
    const ca = await startCa('Policy');
    // Before any policy: a token of the server profile for a name, and its certificate.
    const before = await grant(ca, 'api', 'server', { dns: ['api.svc.example'] }, 2 * H);
    const apiKey = csr('api');
    const first = await api(ca, '/v1/sign', { body: { csr: apiKey.csr, token: before } });
    assert.equal(first.status, 201, JSON.stringify(first.json));
    const apiCert = { cert: first.json['certificate'] as string, key: apiKey.key };

    policySet(ca, ['--profile', 'spiffe', '--max-validity', '2h', '--spiffe', 'spiffe://svc.example/ns/*/sa/*']);
    const outside = await grant(ca, 'web', 'spiffe', { spiffeId: 'spiffe://svc.example/web' }, H);
    const o = await api(ca, '/v1/sign', { body: { csr: csr('web').csr, token: outside } });
    assert.equal(o.status, 403, JSON.stringify(o.json));
    assert.equal(o.json.error!.code, 'NAME_NOT_PERMITTED');
    assert.match(o.json.error!.message, /spiffe:\/\/svc\.example\/web.*does not match.*ns\/\*\/sa\/\*/);

    const tooLong = await grant(ca, 'b', 'spiffe', { spiffeId: 'spiffe://svc.example/ns/a/sa/b' }, 3 * H);
    const l = await api(ca, '/v1/sign', { body: { csr: csr('b').csr, token: tooLong } });
    assert.equal(l.json.error!.code, 'TOKEN_INVALID');
    assert.match(l.json.error!.message, /maximum of 2h for spiffe certificates/);

    // A refused request did not spend the token's name: a fitting token is granted, for its lifetime.
    const fits = await grant(ca, 'b', 'spiffe', { spiffeId: 'spiffe://svc.example/ns/a/sa/b' }, H);
    const bKey = csr('b');
    const ok = await api(ca, '/v1/sign', { body: { csr: bKey.csr, token: fits } });
    assert.equal(ok.status, 201, JSON.stringify(ok.json));
    assert.ok(Math.abs(lifetimeMs(ok.json['certificate'] as string) - H) <= 61_000);

    // Tightened while certificates are out: a renewal gets the new maximum, and names no longer granted are refused.
    policySet(ca, ['--profile', 'spiffe', '--max-validity', '30m']);
    const renewed = await api(ca, '/v1/renew', {
      body: { csr: csr('b').csr },
      as: { cert: ok.json['certificate'] as string, key: bKey.key },
    });
    assert.equal(renewed.status, 201, JSON.stringify(renewed.json));
    assert.ok(lifetimeMs(renewed.json['certificate'] as string) <= 30 * 60e3 + 61_000);
    policySet(ca, ['--profile', 'server', '--dns', 'other.example']);
    const r = await api(ca, '/v1/renew', { body: { csr: csr('api').csr }, as: apiCert });
    assert.equal(r.json.error!.code, 'NAME_NOT_PERMITTED', JSON.stringify(r.json));
    assert.match(r.json.error!.message, /api\.svc\.example.*not among the server profile's names \(other\.example\)/);
    policySet(ca, ['--profile', 'server', '--any-names']);
    const again = await api(ca, '/v1/renew', { body: { csr: csr('api').csr }, as: apiCert });
    assert.equal(again.status, 201, JSON.stringify(again.json));

    // A policy file broken by hand is not "no policy": the service refuses until it is correct.
    fs.writeFileSync(
      path.join(ca.home, 'policy.json'),
      '{"version":1,"profiles":{"spiffe":{"maxValidity":"1 hour"}}}',
      {
        mode: 0o600,
      },
    );
    const broken = await grant(ca, 'c', 'spiffe', { spiffeId: 'spiffe://svc.example/ns/a/sa/c' }, 60e3);
    const b = await api(ca, '/v1/sign', { body: { csr: csr('c').csr, token: broken } });
    assert.equal(b.status, 503, JSON.stringify(b.json));
    assert.equal(b.json.error!.code, 'POLICY_INVALID');
    assert.match(b.json.error!.message, /policy\.json: spiffe\.maxValidity '1 hour' is not a duration/);
    const ready = await api(ca, '/readyz');
    assert.equal(ready.status, 503);
    assert.match(JSON.stringify(ready.json), /issuance policy/);
  });

  it('mtls ca token takes its default lifetime from the policy and refuses what the CA would refuse', async () => {
    const ca = await startCa('PolicyCli');
    const validity = (t: string) =>
      (JSON.parse(Buffer.from(t.split('.')[1]!, 'base64url').toString()) as { mtls: { validity: number } }).mtls
        .validity;
    assert.equal(validity(token(ca, ['w', '--spiffe-id', 'spiffe://svc.example/w'])), 24 * 3600);
    policySet(ca, ['--profile', 'spiffe', '--default-validity', '45m', '--max-validity', '1h']);
    assert.equal(validity(token(ca, ['w', '--spiffe-id', 'spiffe://svc.example/w'])), 45 * 60);
    const long = mtls(['ca', 'token', 'w', '--spiffe-id', 'spiffe://svc.example/w', '--validity', '2h'], {
      env: ca.env,
    });
    assert.equal(long.status, 2);
    assert.match(long.stderr, /longer than the spiffe profile's maximum of 1h/);
    policySet(ca, ['--profile', 'server', '--dns', '.svc.example', '--ip', '10.0.0.0/8']);
    assert.ok(token(ca, ['a', '--dns', 'a.svc.example', '--ip', '10.1.2.3']).length > 100);
    for (const [args, why] of [
      [['--dns', 'svc.example'], /'svc\.example' is not among/],
      [['--dns', 'a.svc.example', '--ip', '192.168.0.1'], /'192\.168\.0\.1' is not in the server profile's ranges/],
    ] as const) {
      const r = mtls(['ca', 'token', 'a', ...args], { env: ca.env });
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, why);
    }
    // A rule that does not parse changes nothing.
    const before = fs.readFileSync(path.join(ca.home, 'policy.json'), 'utf8');
    for (const args of [
      ['--profile', 'spiffe', '--default-validity', '2h'],
      ['--profile', 'server', '--ip', '10.0.0.0/33'],
      ['--profile', 'spiffe', '--spiffe', 'https://not-spiffe'],
      ['--profile', 'server', '--dns', '*.svc.example'],
    ]) {
      const r = mtls(['ca', 'policy', 'set', ...args], { env: ca.env });
      assert.notEqual(r.status, 0, args.join(' '));
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    }
    assert.equal(fs.readFileSync(path.join(ca.home, 'policy.json'), 'utf8'), before);
    assert.equal(fs.statSync(path.join(ca.home, 'policy.json')).mode & 0o777, 0o600);
  });
});
