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
  | 'HANDSHAKE_FAILED';

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

/** Exit status of the CLI for an error: 2 for unusable input, 1 for everything that was refused or failed. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof MtlsError) return INPUT_CODES.has(err.code) ? 2 : 1;
  return 1;
}

/** A one-line message for any thrown value; keeps unknown errors short and never includes stack or key bytes. */
export function messageOf(err: unknown): string {
  if (err instanceof MtlsError) return err.message;
  if (err instanceof Error) return err.message.split('\n')[0] ?? String(err);
  return String(err);
}
