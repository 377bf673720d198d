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
  // The first handshake is also shown decrypted, step by step, by mtls trace.
  assert.match(r.stdout, /CertificateRequest: the server asks for a client certificate/);
  assert.match(r.stdout, /client Finished: verify_data matches/);
  assert.match(
    r.stdout,
    /first application data from the server, decrypted: "hello spiffe:\/\/demo\.mtlskit\.dev\/ns\/payments\/sa\/api\\n"/,
  );
  assert.ok(Date.now() - t0 < 15_000);
});
