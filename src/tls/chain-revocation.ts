import { messageOf } from '../errors.js';
import type { Certificate } from '../pki/certificate.js';
import { crlSetProblem, readCrls, revokedBy } from '../pki/crl.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn } from '../pki/names.js';
import { issuedBy, type OcspStatus } from '../pki/ocsp-check.js';
import { CrlFetcher } from './crl-fetch.js';
import { ocspOutcome } from './ocsp-fetch.js';

/** One certificate's revocation status, and where it came from (issue 14: connect, trace). */
export interface ChainRevocation {
  certificate: Certificate;
  status: 'good' | 'revoked' | 'unknown' | 'failed' | 'not checked';
  /** 'its stapled OCSP response', 'the OCSP responder URL', 'the CRL at URL', or why nothing was asked. */
  source: string;
  revokedAt?: Date;
  reason?: string;
  /** For 'failed': why no trustworthy answer could be had. */
  why?: string;
}

/**
 * The revocation status of each certificate of a server's `chain` (leaf first) short of its trust anchor: the leaf
 * from its staple when the server sent one (already checked), else from the OCSP responder it names; a CA
 * certificate, or a leaf that names no responder, from the CRL at its distribution point, checked against its
 * issuer's key. Each question is bounded (`timeoutMs`, default 3 s); nothing is asked twice. Never throws: what
 * cannot be had is 'failed' with the reason.
 */
export async function chainRevocation(
  chain: readonly Certificate[],
  anchors: readonly Certificate[],
  o: { staple?: OcspStatus; timeoutMs?: number; now?: Date } = {},
): Promise<ChainRevocation[]> {
  const now = o.now ?? new Date();
  const timeoutMs = o.timeoutMs ?? 3000;
  const out: ChainRevocation[] = [];
  for (const [i, cert] of chain.entries()) {
    if (sameDn(cert.subject, cert.issuer) && anchors.some((a) => a.der.equals(cert.der))) break; // the anchor
    const issuer = [chain[i + 1], ...anchors].find((c) => c && issuedBy(cert, c));
    if (!issuer) {
      out.push({ certificate: cert, status: 'not checked', source: 'its issuer is not in the chain or the bundle' });
      if (!anchors.some((a) => sameDn(a.subject, cert.issuer))) break;
      continue;
    }
    out.push(await statusOf(cert, issuer, i === 0 ? o.staple : undefined, timeoutMs, now));
    if (anchors.some((a) => a.der.equals(issuer.der))) break;
  }
  return out;
}

async function statusOf(
  cert: Certificate,
  issuer: Certificate,
  staple: OcspStatus | undefined,
  timeoutMs: number,
  now: Date,
): Promise<ChainRevocation> {
  // A leaf: its staple, else its responder, else its CRL. A CA certificate: its CRL (one a year at the root, where
  // one question about each leaf would do), else its responder.
  const crlUrl = cert.crlUrls?.find((u) => /^https?:\/\//i.test(u));
  const o =
    cert.basicConstraints?.ca && crlUrl
      ? undefined
      : await ocspOutcome(cert, issuer, { ...(staple ? { staple } : {}), timeoutMs, now });
  if (o && 'failed' in o) return { certificate: cert, status: 'failed', source: o.source, why: o.failed };
  if (o)
    return {
      certificate: cert,
      status: o.status.status,
      source: `${o.source} (signed by ${o.status.signedBy})`,
      ...(o.status.revokedAt ? { revokedAt: o.status.revokedAt } : {}),
      ...(o.status.reason ? { reason: o.status.reason } : {}),
    };
  if (!crlUrl) return { certificate: cert, status: 'not checked', source: 'it names no OCSP responder or CRL' };
  const source = `the CRL at ${crlUrl}`;
  try {
    const crls = readCrls(await new CrlFetcher([crlUrl], { timeoutMs }).fetchAll(), source).filter((c) =>
      sameDn(c.issuer, cert.issuer),
    );
    if (crls.length === 0)
      return { certificate: cert, status: 'failed', source, why: `no CRL of '${formatDn(cert.issuer)}' there` };
    const problem = crlSetProblem(crls, [], [issuer], now, source);
    if (problem) return { certificate: cert, status: 'failed', source, why: problem };
    return {
      certificate: cert,
      status: revokedBy(crls, cert) ? 'revoked' : 'good',
      source: `${source} (next update ${crls[0]!.nextUpdate?.toISOString() ?? 'none'})`,
    };
  } catch (err) {
    return { certificate: cert, status: 'failed', source, why: messageOf(err) };
  }
}
