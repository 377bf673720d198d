import { MtlsError } from '../errors.js';
import { crlSetProblem, readCrls, type Crl } from '../pki/crl.js';
import { encodePem } from '../pki/pem.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import type { Credentials } from './credentials.js';

/**
 * CRLs checked before a server enforces them, as Node's `crl` option wants them: one PEM string per CRL (Node reads
 * only the first CRL of each string, so a file holding the root's and the intermediate's CRLs must be split).
 * Refused with one line: an empty, garbage, wrongly signed, foreign or expired CRL, or a CA of the trust bundle
 * without one. An unusable CRL never means "no revocation".
 */
export function crlOption(
  data: Buffer | string,
  what: string,
  creds: Pick<Credentials, 'trustAnchors' | 'chain'>,
  at = new Date(),
): string[] {
  return checkedCrls(data, what, creds, at).pem;
}

/** The checked CRLs, parsed (for admission checks: src/proxy/server-base.ts) and as Node's `crl` option. */
export function checkedCrls(
  data: Buffer | string,
  what: string,
  creds: Pick<Credentials, 'trustAnchors' | 'chain'>,
  at = new Date(),
): { crls: Crl[]; pem: string[] } {
  const crls = readCrls(Buffer.from(data), what);
  const problem = crlSetProblem(crls, creds.trustAnchors, creds.chain.slice(1), at, what);
  if (problem) throw new MtlsError('BAD_INPUT', problem);
  return { crls, pem: crls.map((c) => encodePem('X509 CRL', c.der)) };
}

/** checkedCrls for a file (at most MAX_INPUT.crl bytes). */
export function loadCrlFile(
  file: string,
  creds: Pick<Credentials, 'trustAnchors' | 'chain'>,
  at = new Date(),
): { crls: Crl[]; pem: string[] } {
  return checkedCrls(readInput(file, 'CRL file', MAX_INPUT.crl), `CRL file ${file}`, creds, at);
}
