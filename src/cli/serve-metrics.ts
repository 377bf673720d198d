import type http from 'node:http';
import client from 'prom-client';
import { createAdminServer } from '../proxy/admin.js';

/**
 * What `mtls serve --admin ADDR` counts (issue 14: a revocation check that admits without fresh data is counted,
 * not only logged), served with /healthz and /readyz on a plain-HTTP admin port, as the proxy's.
 */
export class ServeMetrics {
  readonly registry = new client.Registry();
  readonly connections = new client.Counter({
    name: 'mtls_serve_decisions_total',
    help: 'Connections (TCP mode) or requests (HTTP mode) decided by the policy, by decision',
    labelNames: ['decision'],
    registers: [this.registry],
  });
  readonly handshakeErrors = new client.Counter({
    name: 'mtls_serve_handshake_errors_total',
    help: 'Handshakes that failed or clients refused after them (revoked, no revocation status), by error code',
    labelNames: ['code'],
    registers: [this.registry],
  });
  readonly crlStaleAdmissions = new client.Counter({
    name: 'mtls_serve_crl_stale_admissions_total',
    help: 'Clients admitted while a CRL in force was past its nextUpdate (--crl-soft-fail)',
    registers: [this.registry],
  });
  readonly ocspUnknown = new client.Counter({
    name: 'mtls_serve_ocsp_unknown_total',
    help: 'Client certificates whose OCSP status could not be had, by what was done: refused, or admitted (--ocsp-soft-fail)',
    labelNames: ['result'],
    registers: [this.registry],
  });

  /** The admin server; `ready()` says whether the mTLS port is listening. */
  adminServer(ready: () => boolean): http.Server {
    return createAdminServer({
      metrics: async () => ({ contentType: this.registry.contentType, body: await this.registry.metrics() }),
      readiness: () => (ready() ? { ready: true, reason: 'listening' } : { ready: false, reason: 'starting' }),
    });
  }
}
