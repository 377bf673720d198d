import type { PeerIdentity } from '../identity/identity.js';
import { encodePem } from '../pki/pem.js';

/**
 * Envoy's x-forwarded-client-cert value for one hop: `By=<our URI>;Hash=<sha256 hex>;Subject="...";URI=...;DNS=...`
 * (envoyproxy.io, "x-forwarded-client-cert"). Values with `,`, `;`, `=` or `"` are quoted, `"` escaped as `\"`.
 * The header the client sent is never trusted: the proxy deletes it and sets this (sanitize-and-set).
 */
export function xfccValue(id: PeerIdentity, opts: { by?: string; includeCert?: boolean } = {}): string {
  const pairs: string[] = [];
  const put = (k: string, v: string) =>
    pairs.push(`${k}=${/[,;="\\\s]/.test(v) ? `"${v.replace(/(["\\])/g, '\\$1')}"` : v}`);
  if (opts.by) put('By', opts.by);
  put('Hash', id.fingerprint256.replace(/:/g, '').toLowerCase());
  if (opts.includeCert) put('Cert', encodeURIComponent(encodePem('CERTIFICATE', id.certificate.der)));
  put('Subject', id.subjectDn);
  for (const u of id.uris) put('URI', u);
  for (const d of id.dns) put('DNS', d);
  return pairs.join(';');
}

/** RFC 9440 Client-Cert: the DER certificate as a Structured Field byte sequence. */
export function clientCertHeader(id: PeerIdentity): string {
  return `:${id.certificate.der.toString('base64')}:`;
}

/** Headers a client must never be able to set on the backend's side of the proxy. */
export const IDENTITY_HEADERS = ['x-forwarded-client-cert', 'client-cert', 'client-cert-chain'] as const;
