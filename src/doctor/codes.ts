import { exitCodeFor, type MtlsErrorCode } from '../errors.js';

/**
 * What `mtls doctor` can conclude, one code per cause (each with its own fix), and the error code each stands for:
 * that code's family gives the exit status (src/errors.ts). OK stands for none.
 */
export const DIAGNOSES = {
  OK: null,
  KEY_MISMATCH: 'KEY_MISMATCH',
  UNREACHABLE: 'UNREACHABLE',
  NOT_TLS: 'NOT_TLS',
  NO_COMMON_VERSION: 'HANDSHAKE_FAILED',
  NO_COMMON_CIPHER: 'HANDSHAKE_FAILED',
  HANDSHAKE_FAILED: 'HANDSHAKE_FAILED',
  SERVER_CHAIN_INCOMPLETE: 'CERT_UNTRUSTED',
  SERVER_UNTRUSTED: 'CERT_UNTRUSTED',
  SERVER_CERT_EXPIRED: 'CERT_EXPIRED',
  SERVER_WRONG_NAME: 'SERVER_IDENTITY_MISMATCH',
  SERVER_CERT_INVALID: 'CERT_INVALID',
  SERVER_CERT_REVOKED: 'CERT_REVOKED',
  CLOCK_SKEW: 'CERT_NOT_YET_VALID',
  CLIENT_CERT_REQUIRED: 'PEER_REQUIRES_CERT',
  OUR_CERT_NOT_CLIENT: 'PEER_REJECTED_OUR_CERT',
  OUR_CERT_EXPIRED: 'PEER_REJECTED_OUR_CERT',
  OUR_CA_UNKNOWN: 'PEER_REJECTED_OUR_CERT',
  OUR_CERT_REVOKED: 'PEER_REJECTED_OUR_CERT',
  OUR_CERT_REJECTED: 'PEER_REJECTED_OUR_CERT',
  NOT_AUTHORIZED: 'NOT_AUTHORIZED',
} as const satisfies Record<string, MtlsErrorCode | null>;
export type DiagnosisCode = keyof typeof DIAGNOSES;

export interface DoctorCheck {
  name: string;
  /** true passed, false failed, null could not be checked. */
  ok: boolean | null;
  detail: string;
}

export interface Diagnosis {
  code: DiagnosisCode;
  /** What is wrong, in one sentence. */
  cause: string;
  /** What to do about it, in one sentence. */
  fix: string;
}

export interface DoctorReport {
  target: string;
  ok: boolean;
  diagnosis: Diagnosis;
  /** Every check that ran, in order. */
  checks: DoctorCheck[];
  protocol?: string;
  cipherSuite?: string;
}

export const diag = (code: DiagnosisCode, cause: string, fix: string): Diagnosis => ({ code, cause, fix });

/** Exit status for a diagnosis, on the CLI's scale: 0 healthy, else its error code's (src/errors.ts). */
export function doctorExitCode(code: DiagnosisCode): number {
  const e = DIAGNOSES[code];
  return e === null ? 0 : exitCodeFor(e);
}
