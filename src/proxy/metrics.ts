import client from 'prom-client';

/** Distinct identities counted by name before the rest are folded into "other" (bounded cardinality). */
export const MAX_IDENTITY_LABELS = 100;

/** A Counter in `registry`: the counters' declarations are their name, help and labels, nothing else. */
export function counterIn<L extends string>(
  registry: client.Registry,
  name: string,
  help: string,
  labelNames: readonly L[] = [],
): client.Counter<L> {
  return new client.Counter<L>({ name, help, labelNames, registers: [registry] });
}

/** The proxy's Prometheus metrics, in a registry of their own (one per process; the cluster primary aggregates). */
export class ProxyMetrics {
  readonly registry = new client.Registry();
  readonly handshakes = counterIn(
    this.registry,
    'mtls_proxy_handshakes_total',
    'TLS handshakes by listener, result (ok, denied, failed, probe) and reason code',
    ['listener', 'result', 'reason'],
  );
  readonly revokedClosed = counterIn(
    this.registry,
    'mtls_proxy_revoked_connections_closed_total',
    'Open connections closed because a CRL reload revoked their client certificate',
    ['listener'],
  );
  readonly crlStaleAdmissions = counterIn(
    this.registry,
    'mtls_proxy_crl_stale_admissions_total',
    'Revocation checks (admissions, HTTP requests) passed under --crl-soft-fail with a CRL past its nextUpdate',
    ['listener'],
  );
  readonly ocspUnknown = counterIn(
    this.registry,
    'mtls_proxy_ocsp_unknown_total',
    'Client certificates whose OCSP status could not be had, by what was done: refused (hard-fail) or admitted (--ocsp-soft-fail)',
    ['listener', 'result'],
  );
  readonly active = new client.Gauge({
    name: 'mtls_proxy_active_connections',
    help: 'Connections open now',
    labelNames: ['listener'],
    registers: [this.registry],
  });
  readonly bytes = counterIn(
    this.registry,
    'mtls_proxy_bytes_total',
    'Bytes relayed: up = from the client to the target, down = back',
    ['listener', 'direction'],
  );
  readonly handshakeSeconds = new client.Histogram({
    name: 'mtls_proxy_handshake_duration_seconds',
    help: 'From TCP accept (or connect) to a finished TLS handshake',
    labelNames: ['listener'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    registers: [this.registry],
  });
  readonly resumed = counterIn(
    this.registry,
    'mtls_proxy_sessions_resumed_total',
    'Handshakes that resumed a TLS session (divide by handshakes_total{result="ok"} for the rate)',
    ['listener'],
  );
  readonly certExpiry = new client.Gauge({
    name: 'mtls_proxy_certificate_expiry_timestamp_seconds',
    help: "Unix time at which the listener's certificate expires",
    labelNames: ['listener'],
    aggregator: 'min',
    registers: [this.registry],
  });
  readonly perIdentity = counterIn(
    this.registry,
    'mtls_proxy_identity_connections_total',
    `Allowed connections by peer identity (the first ${MAX_IDENTITY_LABELS} identities by name, the rest as "other")`,
    ['listener', 'identity'],
  );
  readonly httpRefused = counterIn(
    this.registry,
    'mtls_proxy_http_refused_total',
    'HTTP requests cut or refused by a limit: head_timeout (408), body_timeout ' +
      '(408), backend_timeout (504), backend_aborted, identity_busy (503)',
    ['listener', 'reason'],
  );
  readonly reloads = counterIn(
    this.registry,
    'mtls_proxy_reloads_total',
    'Reloads of certificates, trust and policy by result',
    ['listener', 'result'],
  );
  private readonly identities = new Set<string>();

  constructor(defaults = true) {
    if (defaults) client.collectDefaultMetrics({ register: this.registry });
  }

  /** The label for an identity, folding everything past the first MAX_IDENTITY_LABELS into "other". */
  identityLabel(name: string): string {
    if (this.identities.has(name)) return name;
    if (this.identities.size >= MAX_IDENTITY_LABELS) return 'other';
    this.identities.add(name);
    return name;
  }
}
