import { MtlsError, type MtlsErrorCode } from '../errors.js';

/**
 * OpenSSL verification codes (as Node reports them in `err.code` / `socket.authorizationError`) and TLS alerts
 * (`ERR_SSL_..._ALERT_...`) mapped to our stable codes and a one-line fix. The one table for TLS failures.
 */
const TABLE: Record<string, [MtlsErrorCode, string]> = {
  // we verified the peer's certificate and it failed
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: [
    'CERT_UNTRUSTED',
    "the peer's certificate is not signed by a CA in our trust bundle (or its " +
      'intermediate is missing); check --ca and that the peer sends its chain',
  ],
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: ['CERT_UNTRUSTED', "the peer's issuer is not in our trust bundle; check --ca"],
  UNABLE_TO_GET_ISSUER_CERT: ['CERT_UNTRUSTED', "the peer's issuer is not in our trust bundle; check --ca"],
  SELF_SIGNED_CERT_IN_CHAIN: ['CERT_UNTRUSTED', "the peer's chain ends in a root we do not trust; check --ca"],
  DEPTH_ZERO_SELF_SIGNED_CERT: ['CERT_UNTRUSTED', 'the peer presented a self-signed certificate we do not trust'],
  CERT_SIGNATURE_FAILURE: ['CERT_UNTRUSTED', "the signature on the peer's certificate does not verify"],
  CERT_HAS_EXPIRED: ['CERT_EXPIRED', "the peer's certificate has expired; renew it"],
  CERT_NOT_YET_VALID: ['CERT_NOT_YET_VALID', "the peer's certificate is not valid yet; check both clocks"],
  CERT_REVOKED: [
    'CERT_REVOKED',
    "the peer's certificate (or a CA of its chain) is revoked by our CRLs; the peer needs a new certificate",
  ],
  UNABLE_TO_GET_CRL: [
    'CERT_UNTRUSTED',
    "no CRL for a CA of the peer's chain; give a CRL for every CA (root and intermediates) with --crl",
  ],
  CRL_HAS_EXPIRED: ['CERT_UNTRUSTED', "our CRL for a CA of the peer's chain has expired; publish a new CRL"],
  CRL_NOT_YET_VALID: ['CERT_UNTRUSTED', "our CRL for a CA of the peer's chain is not valid yet; check the clocks"],
  CRL_SIGNATURE_FAILURE: [
    'CERT_UNTRUSTED',
    "a CRL's signature does not verify with its CA's key; get the CRL from the CA that issued it",
  ],
  INVALID_PURPOSE: [
    'CERT_WRONG_PURPOSE',
    "the peer's certificate is not for this purpose (EKU): a server certificate " +
      'is not a client certificate; issue one with the right profile',
  ],
  INVALID_CA: ['CERT_UNTRUSTED', "a certificate in the peer's chain is used as a CA but is not one"],
  PATH_LENGTH_EXCEEDED: ['CERT_UNTRUSTED', "the peer's chain is longer than its CA allows (pathlen)"],
  ERR_TLS_CERT_ALTNAME_INVALID: [
    'SERVER_IDENTITY_MISMATCH',
    "the server's certificate is not for the name we connected to; use --servername or fix its SANs",
  ],
  // the peer refused us (alerts it sent)
  ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED: [
    'PEER_REQUIRES_CERT',
    'the server requires a client certificate; pass --cert and --key',
  ],
  // the server's side: the client sent nothing
  ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE: [
    'NO_CLIENT_CERT',
    'the client presented no certificate; it must connect with one (e.g. curl --cert --key)',
  ],
  ERR_SSL_TLSV1_ALERT_UNKNOWN_CA: [
    'PEER_REJECTED_OUR_CERT',
    "the peer does not trust the CA that issued our certificate (unknown_ca); give it our CA's bundle",
  ],
  ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE: [
    'PEER_REJECTED_OUR_CERT',
    'the peer rejected our certificate (bad_certificate)',
  ],
  ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE: [
    'PEER_REJECTED_OUR_CERT',
    'the peer rejected our certificate as unsuitable (wrong EKU?); use a client certificate',
  ],
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED: [
    'PEER_REJECTED_OUR_CERT',
    'the peer says our certificate has expired; renew it',
  ],
  ERR_SSL_SSLV3_ALERT_CERTIFICATE_REVOKED: ['PEER_REJECTED_OUR_CERT', 'the peer says our certificate is revoked'],
  ERR_SSL_TLSV1_ALERT_ACCESS_DENIED: [
    'PEER_REJECTED_OUR_CERT',
    'the peer denied access to our identity (access_denied); ask for an allow rule',
  ],
  ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE: [
    'HANDSHAKE_FAILED',
    'no common TLS version, cipher suite or group with the peer',
  ],
  ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION: [
    'HANDSHAKE_FAILED',
    'no common TLS version with the peer (we require TLS 1.2 or newer)',
  ],
  ERR_SSL_WRONG_VERSION_NUMBER: ['NOT_TLS', 'the peer does not speak TLS on this port'],
  ERR_SSL_PACKET_LENGTH_TOO_LONG: ['NOT_TLS', 'the peer does not speak TLS on this port'],
  ERR_SSL_HTTP_REQUEST: [
    'NOT_TLS',
    'the peer sent plain HTTP to a TLS port; it must use https:// (and a client certificate)',
  ],
  ECONNREFUSED: ['UNREACHABLE', 'nothing listens on that address; check host and port'],
  ENOTFOUND: ['UNREACHABLE', 'the host name does not resolve'],
  EHOSTUNREACH: ['UNREACHABLE', 'the host is not reachable'],
  ETIMEDOUT: ['UNREACHABLE', 'the connection timed out'],
};

/**
 * Turns a TLS failure into an MtlsError with a stable code. `sentOurCert`: the failure is a reset or close
 * right after we presented a certificate, which is how Node servers (and TLS 1.3 in general) reject a client
 * certificate without an alert. `unanswered`: the peer never got past our ClientHello (no handshake secret was
 * derived), so a close then says nothing about our certificate.
 */
export function classifyTlsError(
  err: unknown,
  context: {
    sentOurCert?: boolean;
    peer?: string;
    unanswered?: boolean;
    connected?: boolean;
    serverBytes?: number;
  } = {},
): MtlsError {
  if (err instanceof MtlsError) return err;
  const e = err as NodeJS.ErrnoException & { reason?: string };
  const code = e?.code ?? '';
  const where = context.peer ? `${context.peer}: ` : '';
  // A deadline after the TCP connection is not about reachability (issue 16: one classification everywhere).
  if (code === 'ETIMEDOUT' && context.connected) {
    return context.serverBytes
      ? new MtlsError(
          'HANDSHAKE_TIMEOUT',
          `${where}the TLS handshake did not finish in time; run mtls trace for the exchange`,
          {
            cause: err,
          },
        )
      : new MtlsError(
          'NOT_TLS',
          `${where}accepted the TCP connection but sent no TLS answer in time: not a TLS server on this port ` +
            '(or a protocol that waits for the client to speak first)',
          { cause: err },
        );
  }
  const hit = TABLE[code] ?? TABLE[authorizationCode(e?.message ?? '')];
  if (hit) return new MtlsError(hit[0], `${where}${hit[1]}`, { cause: err, details: { tlsCode: code } });
  const hungUp = code === 'ECONNRESET' || /socket hang up|closed/i.test(e?.message ?? '');
  if (hungUp && context.unanswered) {
    return new MtlsError(
      'HANDSHAKE_FAILED',
      `${where}the peer closed the connection after our ClientHello without answering ` +
        `it (no common TLS version or cipher, not a TLS server, or it refuses our ` +
        `address); our certificate was never sent`,
      { cause: err },
    );
  }
  if (hungUp && context.sentOurCert) {
    return new MtlsError(
      'PEER_CLOSED_AFTER_OUR_CERT',
      `${where}the peer closed the connection after receiving our certificate: ` +
        `it most likely rejected it (untrusted CA, wrong purpose, or not allowed by its policy)`,
      { cause: err },
    );
  }
  return new MtlsError('HANDSHAKE_FAILED', `${where}TLS handshake failed (${e?.reason ?? e?.message ?? String(err)})`, {
    cause: err,
    details: { tlsCode: code },
  });
}

/** The stable code for an OpenSSL verify error string such as `socket.authorizationError`. */
export function authorizationFailure(authorizationError: string | Error | null | undefined): MtlsError | undefined {
  if (!authorizationError) return undefined;
  const code =
    typeof authorizationError === 'string'
      ? authorizationError
      : ((authorizationError as NodeJS.ErrnoException).code ?? authorizationError.message);
  const hit = TABLE[code];
  return hit
    ? new MtlsError(hit[0], hit[1], { details: { tlsCode: code } })
    : new MtlsError('CERT_UNTRUSTED', `the peer's certificate failed verification (${code})`, {
        details: { tlsCode: code },
      });
}

function authorizationCode(message: string): string {
  return Object.keys(TABLE).find((k) => message.includes(k)) ?? '';
}
