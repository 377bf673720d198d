import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { compilePolicy } from '../../src/identity/policy.js';
import { normalizeRequestTarget, pathUnder } from '../../src/identity/request-target.js';
import { TARGETS } from '../helpers/request-targets.js';

describe('normalizeRequestTarget (RFC 3986 6.2.2) and route prefixes', () => {
  it('every spelling of the table normalizes to the path the route policy must see, or is refused', () => {
    for (const t of TARGETS) {
      const n = normalizeRequestTarget(t.target);
      if (t.status === 400) {
        assert.equal(n.ok, false, `${t.target} must be refused`);
        continue;
      }
      assert.ok(n.ok, `${t.target}: ${!n.ok && n.reason}`);
      const under = pathUnder(n.path, '/admin');
      assert.equal(under, t.status === 403, `${t.target} -> ${n.path}`);
      if (t.backend) assert.equal(n.path + n.query, t.backend);
    }
  });

  it('merging slashes is an option; a refusal says what is wrong', () => {
    const kept = normalizeRequestTarget('//admin//x', { mergeSlashes: false });
    assert.ok(kept.ok && kept.path === '//admin//x');
    const bad = normalizeRequestTarget('/a%2fb');
    assert.ok(!bad.ok && /encoded '\/' \(%2F\)/.test(bad.reason));
    assert.ok(!normalizeRequestTarget('/' + 'a'.repeat(20_000)).ok, 'a huge target is refused');
  });

  it('prefixes match on segment boundaries and are normalized when the policy is compiled', () => {
    assert.equal(pathUnder('/administrator', '/admin'), false);
    assert.equal(pathUnder('/admin/x', '/admin/'), true);
    assert.equal(pathUnder('/admin', '/admin/'), true);
    const p = compilePolicy({ allow: ['any'], routes: [{ prefix: '/%61dmin/./', allow: [] }] });
    assert.equal(p.config.routes![0]!.prefix, '/%61dmin/./');
    const id = {
      spiffeId: undefined,
      dns: [],
      uris: [],
      emails: [],
      ips: [],
      subject: [],
      subjectDn: 'CN=x',
      fingerprint256: '',
      serial: '1',
    } as unknown as Parameters<typeof p.decide>[0];
    assert.equal(p.decide(id, '/admin/x').allowed, false, 'the prefix /%61dmin/./ is /admin/');
    assert.throws(
      () => compilePolicy({ allow: [], routes: [{ prefix: '/a%2fb', allow: [] }] }),
      /route prefix '\/a%2fb': the path holds an encoded/,
    );
  });
});
