import assert from 'node:assert/strict';
import { it } from 'node:test';
import { mtls } from './helpers/pki.js';

it('mtls demo runs real handshakes, explains them and exits 0 within a few seconds', () => {
  const t0 = Date.now();
  const r = mtls(['demo']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /server saw 'payments-api' spiffe:\/\/demo\.mtlskit\.dev\/ns\/payments\/sa\/api/);
  assert.match(r.stdout, /server refused the client: it sent no certificate/);
  assert.match(r.stdout, /'demo-server' is not a client certificate/);
  assert.match(r.stdout, /every handshake ended as expected/);
  assert.ok(Date.now() - t0 < 15_000);
});
