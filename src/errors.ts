/**
 * One error type for the whole toolkit: a stable `code` for programs, a one-line `message` for people that says
 * what is wrong and how to fix it, and the data that explains it.
 *
 * Every code is declared once, below, in its family (after rustls' error.rs): the family gives the CLI's exit
 * status, and a code that has a TLS alert on the wire names it. The other lists of outcomes (path validation's
 * problems, doctor's diagnoses, the native engine's close reasons) map onto these codes where they are declared.
 */

/** The families of failure and the exit status of each. */
export const FAMILIES = {
  /** The input cannot be used (a file, a flag, a name): fix the input. */
  input: { exit: 2 },
  /** Refused by policy or by the state of things (a CA that exists, a name the CA may not issue). */
  refused: { exit: 1 },
  /** We refused the peer: its certificate or identity failed our checks. */
  peerInvalid: { exit: 1 },
  /** The handshake failed for a reason that is neither side's certificate. */
  handshake: { exit: 1 },
  /** The peer refused us. */
  peerRefusedUs: { exit: 3 },
  /** The peer could not be reached, or does not speak TLS. */
  network: { exit: 4 },
  /** mtlskit itself: a part that is not built, or a fault of ours. */
  internal: { exit: 1 },
} as const;
export type ErrorFamily = keyof typeof FAMILIES;

/** RFC 8446 6.2 alert names, for the codes that one of them says on the wire. */
export type AlertName =
  | 'handshake_failure'
  | 'bad_certificate'
  | 'unsupported_certificate'
  | 'certificate_revoked'
  | 'certificate_expired'
  | 'certificate_unknown'
  | 'unknown_ca'
  | 'access_denied'
  | 'protocol_version'
  | 'certificate_required';

interface CodeInfo {
  family: ErrorFamily;
  alert?: AlertName;
}

const CODES = {
  BAD_INPUT: { family: 'input' },
  BAD_PEM: { family: 'input' },
  BAD_DER: { family: 'input' },
  BAD_KEY: { family: 'input' },
  BAD_CSR: { family: 'input' },
  BAD_PKCS12: { family: 'input' },
  BAD_NAME: { family: 'input' },
  BAD_SPIFFE_ID: { family: 'input' },
  BAD_DURATION: { family: 'input' },
  WRONG_PASSPHRASE: { family: 'input' },
  /** A key that does not belong to its certificate. */
  KEY_MISMATCH: { family: 'input' },
  UNSUPPORTED: { family: 'input' },
  USAGE: { family: 'input' },

  CA_EXISTS: { family: 'refused' },
  CA_NOT_FOUND: { family: 'refused' },
  FILE_EXISTS: { family: 'refused' },
  IO: { family: 'refused' },
  NAME_NOT_PERMITTED: { family: 'refused' },
  CSR_REFUSED: { family: 'refused' },
  VALIDITY_EXCEEDS_ISSUER: { family: 'refused' },
  STORE: { family: 'refused' },
  /** `mtls revoke` of an unknown, already revoked or foreign certificate: nothing changed. */
  NOT_REVOCABLE: { family: 'refused' },
  /** An enrollment token that is not this CA's, is malformed, or grants nothing (issue 15). */
  TOKEN_INVALID: { family: 'refused' },
  TOKEN_EXPIRED: { family: 'refused' },
  /** An enrollment token used before: each one grants one certificate. */
  TOKEN_SPENT: { family: 'refused' },
  /** A request for names its token (or the certificate being renewed) does not grant. */
  NAME_NOT_GRANTED: { family: 'refused' },
  /** A renewal the CA refuses: the certificate is expired past the grace window, superseded, or not ours. */
  RENEWAL_REFUSED: { family: 'refused' },

  NO_CLIENT_CERT: { family: 'peerInvalid', alert: 'certificate_required' },
  CERT_UNTRUSTED: { family: 'peerInvalid', alert: 'unknown_ca' },
  CERT_EXPIRED: { family: 'peerInvalid', alert: 'certificate_expired' },
  CERT_REVOKED: { family: 'peerInvalid', alert: 'certificate_revoked' },
  /** No trustworthy revocation status: a responder down, an answer stale, forged or about another certificate. */
  REVOCATION_UNKNOWN: { family: 'peerInvalid', alert: 'certificate_unknown' },
  CERT_NOT_YET_VALID: { family: 'peerInvalid', alert: 'bad_certificate' },
  CERT_WRONG_PURPOSE: { family: 'peerInvalid', alert: 'unsupported_certificate' },
  /** The chain breaks a rule of path validation other than trust, time and purpose (constraints, key usage...). */
  CERT_INVALID: { family: 'peerInvalid', alert: 'bad_certificate' },
  SERVER_IDENTITY_MISMATCH: { family: 'peerInvalid', alert: 'bad_certificate' },
  PEER_NOT_ALLOWED: { family: 'peerInvalid', alert: 'access_denied' },

  HANDSHAKE_FAILED: { family: 'handshake', alert: 'handshake_failure' },
  HANDSHAKE_TIMEOUT: { family: 'handshake' },

  PEER_REQUIRES_CERT: { family: 'peerRefusedUs', alert: 'certificate_required' },
  PEER_REJECTED_OUR_CERT: { family: 'peerRefusedUs', alert: 'bad_certificate' },
  PEER_CLOSED_AFTER_OUR_CERT: { family: 'peerRefusedUs' },
  /** The peer accepted our certificate and its authorization refused our identity (access_denied, HTTP 403). */
  NOT_AUTHORIZED: { family: 'peerRefusedUs', alert: 'access_denied' },

  UNREACHABLE: { family: 'network' },
  NOT_TLS: { family: 'network' },

  /** The native proxy engine is not built (or does not load) on this machine. */
  ENGINE_UNAVAILABLE: { family: 'internal' },
  /** A fault of mtlskit: a caller broke an internal contract. */
  INTERNAL: { family: 'internal' },
} as const satisfies Record<string, CodeInfo>;

export type MtlsErrorCode = keyof typeof CODES;

/** The family and (where one applies) the TLS alert of a code. */
export function codeInfo(code: MtlsErrorCode): CodeInfo {
  return CODES[code];
}

export const ERROR_CODES = Object.keys(CODES) as MtlsErrorCode[];

export class MtlsError extends Error {
  override readonly name = 'MtlsError';
  readonly code: MtlsErrorCode;
  /** Structured facts behind the message (never key material). */
  readonly details?: Record<string, unknown>;

  constructor(
    code: MtlsErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.details) this.details = options.details;
  }
}

/** Exit status of a code: 2 unusable input, 3 the peer rejected us, 4 unreachable or not TLS, 1 the rest. */
export function exitCodeFor(code: MtlsErrorCode): number {
  return FAMILIES[CODES[code].family].exit;
}

/** Exit status of the CLI for any thrown value (1 for what is not an MtlsError). */
export function exitCodeOf(err: unknown): number {
  return err instanceof MtlsError ? exitCodeFor(err.code) : 1;
}

/** A one-line message for any thrown value; keeps unknown errors short and never includes stack or key bytes. */
export function messageOf(err: unknown): string {
  if (err instanceof MtlsError) return err.message;
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}
