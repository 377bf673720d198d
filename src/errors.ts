/**
 * One error type for the whole toolkit: a stable `code` for programs, a one-line `message` for people that
 * says what is wrong and how to fix it, and the data that explains it. Exit codes are mapped here only.
 */
export type MtlsErrorCode =
  // unusable input (exit 2)
  | 'BAD_INPUT'
  | 'BAD_PEM'
  | 'BAD_DER'
  | 'BAD_KEY'
  | 'BAD_CSR'
  | 'BAD_PKCS12'
  | 'BAD_NAME'
  | 'BAD_SPIFFE_ID'
  | 'BAD_DURATION'
  | 'WRONG_PASSPHRASE'
  | 'UNSUPPORTED'
  | 'USAGE'
  // refused by policy or state (exit 1)
  | 'CA_EXISTS'
  | 'CA_NOT_FOUND'
  | 'FILE_EXISTS'
  | 'IO'
  | 'NAME_NOT_PERMITTED'
  | 'CSR_REFUSED'
  | 'VALIDITY_EXCEEDS_ISSUER'
  | 'KEY_MISMATCH'
  | 'STORE'
  // verification (exit 1)
  | 'CERT_INVALID'
  | 'HANDSHAKE_FAILED'
  | 'HANDSHAKE_TIMEOUT'
  // mTLS handshakes: we refused the peer (exit 1)
  | 'NO_CLIENT_CERT'
  | 'CERT_UNTRUSTED'
  | 'CERT_EXPIRED'
  | 'CERT_REVOKED'
  | 'CERT_NOT_YET_VALID'
  | 'CERT_WRONG_PURPOSE'
  | 'SERVER_IDENTITY_MISMATCH'
  | 'PEER_NOT_ALLOWED'
  // mTLS handshakes: the peer refused us (exit 3)
  | 'PEER_REQUIRES_CERT'
  | 'PEER_REJECTED_OUR_CERT'
  | 'PEER_CLOSED_AFTER_OUR_CERT'
  // the network (exit 4)
  | 'UNREACHABLE'
  | 'NOT_TLS';

const INPUT_CODES: ReadonlySet<MtlsErrorCode> = new Set<MtlsErrorCode>([
  'BAD_INPUT', 'BAD_PEM', 'BAD_DER', 'BAD_KEY', 'BAD_CSR', 'BAD_PKCS12', 'BAD_NAME', 'BAD_SPIFFE_ID',
  'BAD_DURATION', 'WRONG_PASSPHRASE', 'UNSUPPORTED', 'USAGE',
]);

export class MtlsError extends Error {
  override readonly name = 'MtlsError';
  readonly code: MtlsErrorCode;
  /** Structured facts behind the message (never key material). */
  readonly details?: Record<string, unknown>;

  constructor(code: MtlsErrorCode, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    if (options.details) this.details = options.details;
  }
}

const PEER_REFUSED_US: ReadonlySet<MtlsErrorCode> = new Set<MtlsErrorCode>(['PEER_REQUIRES_CERT', 'PEER_REJECTED_OUR_CERT', 'PEER_CLOSED_AFTER_OUR_CERT']);
const NETWORK: ReadonlySet<MtlsErrorCode> = new Set<MtlsErrorCode>(['UNREACHABLE', 'NOT_TLS']);

/**
 * Exit status of the CLI for an error: 2 unusable input, 3 the peer rejected us, 4 the peer could not be
 * reached (or does not speak TLS), 1 everything else that was refused or failed (including our verification
 * of the peer).
 */
export function exitCodeOf(err: unknown): number {
  if (err instanceof MtlsError) {
    if (INPUT_CODES.has(err.code)) return 2;
    if (PEER_REFUSED_US.has(err.code)) return 3;
    if (NETWORK.has(err.code)) return 4;
  }
  return 1;
}

/** A one-line message for any thrown value; keeps unknown errors short and never includes stack or key bytes. */
export function messageOf(err: unknown): string {
  if (err instanceof MtlsError) return err.message;
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}
