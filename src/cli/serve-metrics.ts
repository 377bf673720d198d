import type http from 'node:http';
import client from 'prom-client';
import { createAdminServer } from '../proxy/admin.js';
import { counterIn } from '../proxy/metrics.js';

/**
 * What `mtls serve --admin ADDR` counts (issue 14: a revocation check that admits without fresh data is counted,
 * not only logged), served with /healthz and /readyz on a plain-HTTP admin port, as the proxy's.
 */
export class ServeMetrics {
  readonly registry = new client.Registry();
  readonly connections = counterIn(
    this.registry,
    'mtls_serve_decisions_total',
    'Connections (TCP mode) or requests (HTTP mode) decided by the policy, by decision',
    ['decision'],
  );
  readonly handshakeErrors = counterIn(
    this.registry,
    'mtls_serve_handshake_errors_total',
    'Handshakes that failed or clients refused after them (revoked, no revocation status), by error code',
    ['code'],
  );
  readonly crlStaleAdmissions = counterIn(
    this.registry,
    'mtls_serve_crl_stale_admissions_total',
    'Clients admitted while a CRL in force was past its nextUpdate (--crl-soft-fail)',
  );
  readonly ocspUnknown = counterIn(
    this.registry,
    'mtls_serve_ocsp_unknown_total',
    'Client certificates whose OCSP status could not be had, by what was done: refused, or admitted (--ocsp-soft-fail)',
    ['result'],
  );

  /** The admin server; `ready()` says whether the mTLS port is listening. */
  adminServer(ready: () => boolean): http.Server {
    return createAdminServer({
      metrics: async () => ({ contentType: this.registry.contentType, body: await this.registry.metrics() }),
      readiness: () => (ready() ? { ready: true, reason: 'listening' } : { ready: false, reason: 'starting' }),
    });
  }
}
