import { MtlsError } from '../errors.js';
import type { Certificate } from '../pki/certificate.js';
import { crlSetProblem, readCrls, revokedBy, type Crl } from '../pki/crl.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn } from '../pki/names.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import type { Credentials } from './credentials.js';

/**
 * CRLs checked before a server enforces them. Refused with one line: an empty, garbage, wrongly signed, foreign or
 * expired CRL, or a CA of the trust bundle without one. An unusable CRL never means "no revocation".
 */
export function checkedCrls(
  data: Buffer | string,
  what: string,
  creds: Pick<Credentials, 'trustAnchors' | 'chain'>,
  at = new Date(),
): { crls: Crl[] } {
  const crls = readCrls(Buffer.from(data), what);
  const problem = crlSetProblem(crls, creds.trustAnchors, creds.chain.slice(1), at, what);
  if (problem) throw new MtlsError('BAD_INPUT', problem);
  return { crls };
}

/** checkedCrls for a file (at most MAX_INPUT.crl bytes). */
export function loadCrlFile(
  file: string,
  creds: Pick<Credentials, 'trustAnchors' | 'chain'>,
  at = new Date(),
): { crls: Crl[] } {
  return checkedCrls(readInput(file, 'CRL file', MAX_INPUT.crl), `CRL file ${file}`, creds, at);
}

/**
 * Why `chain` (leaf first) must not be admitted under `crls` at `at`: a certificate of it listed by the CRL of its
 * issuer, or that CRL past its nextUpdate. A stale CRL is not "no revocations": without fresh data the peer is
 * refused (hard-fail), as OpenSSL's CRL check does. A lookup is a hash-set probe per certificate, whatever the
 * CRL's size, so servers check revocation here instead of handing CRLs to OpenSSL (Node's `crl` option made a
 * handshake 2.8x dearer at 100,000 entries, BENCHMARKS.md).
 */
export function revocationFailure(
  crls: readonly Crl[],
  chain: readonly Pick<Certificate, 'issuer' | 'subject' | 'serialHex'>[],
  at = new Date(),
  opts: { softFail?: boolean } = {},
): MtlsError | undefined {
  const stale = opts.softFail ? undefined : staleCrl(crls, at);
  if (stale?.nextUpdate)
    return new MtlsError(
      'CERT_UNTRUSTED',
      `our CRL of '${formatDn(stale.issuer)}' expired at ${stale.nextUpdate.toISOString()} and no fresh one was ` +
        `loaded; publish a new CRL (mtls ca crl) where --crl points`,
    );
  for (const cert of chain) {
    const crl = revokedBy(crls, cert);
    if (crl)
      return new MtlsError(
        'CERT_REVOKED',
        `certificate serial ${cert.serialHex} ('${formatDn(cert.subject)}') is revoked ` +
          `by the CRL of '${formatDn(crl.issuer)}' in force; the peer needs a new certificate`,
      );
  }
  return undefined;
}

/** A CRL of `crls` past its nextUpdate at `at`, if any. */
export function staleCrl(crls: readonly Crl[], at = new Date()): Crl | undefined {
  return crls.find((c) => c.nextUpdate !== undefined && c.nextUpdate.getTime() < at.getTime());
}

/**
 * Whether the CAs above the leaf's issuer must be looked up too: some CRL of another issuer lists a certificate.
 * Reading a client's chain from Node (getPeerCertificate(true)) cost 476 µs a handshake here, a fifth of it; with
 * our CA the root's CRL is empty unless an intermediate was revoked, so the leaf alone is usually enough.
 */
export function chainNeeded(crls: readonly Crl[], leaf: Pick<Certificate, 'issuer'>): boolean {
  return crls.some((c) => c.revoked.size > 0 && !sameDn(c.issuer, leaf.issuer));
}

/**
 * The CRLs a server enforces, replaceable while it runs (`replace`, e.g. on a file change): looked up at every
 * handshake and, on HTTP servers, at every request, so a revocation reaches keep-alive connections too.
 */
export class CrlSet {
  private crls: readonly Crl[];
  private readonly staleSaid = new WeakSet<Crl>();

  /**
   * `softFail`: once a CRL in force is past its nextUpdate, admit the certificates it does not list (`onStale` is
   * told once per CRL, `onStaleAdmission` at each such admission) instead of refusing everyone (the default,
   * hard-fail).
   */
  constructor(
    data: Buffer | string,
    what: string,
    creds: Pick<Credentials, 'trustAnchors' | 'chain'>,
    private readonly opts: { softFail?: boolean; onStale?: (crl: Crl) => void; onStaleAdmission?: () => void } = {},
  ) {
    this.crls = checkedCrls(data, what, creds).crls;
  }

  /** Checks the new CRLs first: an unusable one throws and the old ones stay in force. */
  replace(data: Buffer | string, what: string, creds: Pick<Credentials, 'trustAnchors' | 'chain'>): void {
    this.crls = checkedCrls(data, what, creds).crls;
  }

  /** Whether the certificates above the leaf must be looked up as well (chainNeeded). */
  needsChain(leaf: Pick<Certificate, 'issuer'>): boolean {
    return chainNeeded(this.crls, leaf);
  }

  /** Why `chain` (leaf first) must not be admitted now (revocationFailure). */
  failure(chain: readonly Pick<Certificate, 'issuer' | 'subject' | 'serialHex'>[]): MtlsError | undefined {
    const softFail = this.opts.softFail === true;
    const failure = revocationFailure(this.crls, chain, new Date(), { softFail });
    const stale = softFail && !failure ? staleCrl(this.crls) : undefined;
    if (stale) this.opts.onStaleAdmission?.();
    if (stale && !this.staleSaid.has(stale)) {
      this.staleSaid.add(stale);
      this.opts.onStale?.(stale);
    }
    return failure;
  }
}
