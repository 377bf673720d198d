import { MtlsError } from '../errors.js';
import { type Certificate } from './certificate.js';
import { checkSignature, SIGNATURE_MISMATCH } from './signing.js';
import { sameDn } from './name-match.js';
import { checkIpAddress, compileSpiffePattern, formatDn } from './names.js';
import {
  certLabel,
  isSelfIssued,
  judgePath,
  type Profile,
  type Purpose,
  type VerifyProblem,
  type VerifyResult,
} from './path-rules.js';

export interface VerifyOptions {
  /** Trusted roots (or any trusted CA). */
  trustAnchors: Certificate[];
  /** Untrusted certificates that may complete the path. */
  intermediates?: Certificate[];
  /** The time of validation; the pki layer never reads the clock. */
  at: Date;
  /** Host name the leaf must be valid for (SAN dNSName, no CN fallback). */
  dns?: string;
  /** IP address the leaf must be valid for (SAN iPAddress). */
  ip?: string;
  /** Default 'any'. 'server'/'client' require the EKU (when present) and refuse CA certificates as the leaf. */
  purpose?: Purpose;
  /** Most intermediate CA certificates allowed between the leaf and the trust anchor. Default 8. */
  maxDepth?: number;
  /** The leaf must carry exactly one SPIFFE ID matching this pattern (`*` = one segment, trailing `**`). */
  spiffeId?: string;
  /** Default 'strict'; 'rfc5280' and 'compat' accept more (docs/verify.md), never what OpenSSL refuses. */
  profile?: Profile;
}

const MAX_PATHS = 64;
/**
 * Signature verdicts across calls, by the parsed certificates (whose bytes never change: parseCertificate copies
 * its input). A server's trust anchors and configured intermediates are parsed once, so the intermediate's
 * signature under the root is checked once, not on every handshake; a peer's certificates are new objects each
 * time and never hit this cache (nor does it spare them the budget).
 */
const SIGNATURES = new WeakMap<Certificate, WeakMap<Certificate, string | null>>();
const KEY_ID_DIFFERS = 'its key identifier differs from the one the certificate names';
/** A link refused because the key is not the issuer's (a same-named impostor), not because of the algorithm. */
const isImpostorSign = (why: string) => why === KEY_ID_DIFFERS || why === SIGNATURE_MISMATCH;
/**
 * What the peer's chain may make us spend (what an attacker controls must not decide it): Go's x509 stops after
 * 100 signature checks, webpki after 100 signatures and a bounded number of path steps. A chain whose CAs share
 * names and keys level by level (8 per level, 7 levels) otherwise offers 8^7 paths: minutes of CPU.
 */
export const PATH_BUDGET = { signatureChecks: 100, steps: 20_000, intermediates: 64 };

/**
 * RFC 5280 section 6 path validation with a stricter profile (see docs/verify.md): builds every path from the
 * leaf to a trust anchor through the intermediates (linking only where the signature verifies), judges each,
 * and returns the first valid one, or the one with the fewest problems with every problem found.
 */
export function verifyChain(leaf: Certificate, opts: VerifyOptions): VerifyResult {
  if (opts.trustAnchors.length === 0)
    throw new MtlsError('BAD_INPUT', 'the trust bundle holds no certificate; pass the CA certificate with --ca');
  const maxDepth = opts.maxDepth ?? 8;
  if (!Number.isInteger(maxDepth) || maxDepth < 0)
    throw new MtlsError('BAD_INPUT', `max depth ${maxDepth} must be a whole number of 0 or more`);
  const ip = opts.ip === undefined ? undefined : checkIpAddress(opts.ip);
  const pattern = opts.spiffeId === undefined ? undefined : compileSpiffePattern(opts.spiffeId);
  const anchors = opts.trustAnchors;
  const given = opts.intermediates ?? [];
  const pool = [...anchors, ...given.slice(0, PATH_BUDGET.intermediates)];
  const isAnchor = (c: Certificate) => anchors.some((a) => a.der.equals(c.der));

  const complete: Certificate[][] = [];
  let longestPartial: Certificate[] = [leaf];
  const badSignatures: { child: Certificate; issuer: Certificate; why: string }[] = [];
  // Each (certificate, candidate issuer) signature is checked once, however many paths share the step.
  const checked = new Map<Certificate, Map<Certificate, string | null>>();
  let signatureChecks = 0;
  let steps = 0;
  let exhausted = false;
  const signatureProblem = (child: Certificate, cand: Certificate): string | null | undefined => {
    let row = checked.get(child);
    if (!row) checked.set(child, (row = new Map()));
    if (row.has(cand)) return row.get(cand);
    let why: string | null;
    if (child.authorityKeyId && cand.subjectKeyId && !child.authorityKeyId.equals(cand.subjectKeyId)) {
      why = KEY_ID_DIFFERS;
    } else if (SIGNATURES.get(child)?.has(cand)) {
      why = SIGNATURES.get(child)!.get(cand)!;
    } else {
      if (signatureChecks >= PATH_BUDGET.signatureChecks) return undefined;
      signatureChecks++;
      why = cand.publicKey
        ? checkSignature(child.signatureAlgorithm, child.signatureParams, child.tbsDer, child.signature, cand.publicKey)
        : "the issuer's key cannot be read";
      let known = SIGNATURES.get(child);
      if (!known) SIGNATURES.set(child, (known = new WeakMap()));
      known.set(cand, why);
    }
    row.set(cand, why);
    if (why) badSignatures.push({ child, issuer: cand, why });
    return why;
  };
  const extend = (path: Certificate[]): void => {
    if (complete.length >= MAX_PATHS || exhausted) return;
    const last = path.at(-1)!;
    if (isAnchor(last)) {
      complete.push(path);
      return;
    }
    if (path.length > longestPartial.length) longestPartial = path;
    if (path.length > maxDepth + 8) return;
    for (const cand of pool) {
      if (++steps > PATH_BUDGET.steps) {
        exhausted = true;
        return;
      }
      if (path.includes(cand) || path.some((p) => p.der.equals(cand.der)) || !sameDn(cand.subject, last.issuer))
        continue;
      const why = signatureProblem(last, cand);
      if (why === undefined) {
        exhausted = true;
        return;
      }
      if (why) continue;
      extend([...path, cand]);
      if (exhausted) return;
    }
  };
  extend([leaf]);
  const budgetProblem = (): VerifyProblem | undefined => {
    if (!exhausted && given.length <= PATH_BUDGET.intermediates) return undefined;
    const why =
      given.length > PATH_BUDGET.intermediates
        ? `${given.length} intermediates were offered (at most ${PATH_BUDGET.intermediates} are looked at)`
        : signatureChecks >= PATH_BUDGET.signatureChecks
          ? `path building stopped after ${signatureChecks} signature checks`
          : `path building stopped after ${PATH_BUDGET.steps} steps`;
    return {
      code: 'PATH_BUDGET',
      depth: 0,
      message:
        `${why}: the chain offers too many candidate issuers to search (a crafted ` +
        `chain?); send only the chain from the leaf to its root`,
    };
  };

  const ctx = {
    at: opts.at,
    purpose: opts.purpose ?? 'any',
    dns: opts.dns,
    ip,
    pattern,
    maxDepth,
    patternText: opts.spiffeId,
    profile: opts.profile ?? 'strict',
  };
  let best: VerifyResult | undefined;
  for (const path of complete) {
    const r = judgePath(path, true, ctx);
    if (r.valid) return r;
    if (!best || r.problems.length < best.problems.length) best = r;
  }
  const budget = budgetProblem();
  if (best) {
    if (budget) best.problems.push(budget);
    return best;
  }

  const r = judgePath(longestPartial, false, ctx);
  if (budget) r.problems.push(budget);
  const last = longestPartial.at(-1)!;
  const sig = badSignatures.find((b) => b.child === last);
  let message: string;
  let code: VerifyProblem['code'] = 'UNKNOWN_ISSUER';
  if (sig && !isImpostorSign(sig.why)) {
    code = 'BAD_SIGNATURE';
    message = `'${certLabel(last)}' cannot be checked against its issuer '${certLabel(sig.issuer)}': ${sig.why}`;
  } else if (sig)
    message =
      `'${certLabel(last)}' names '${certLabel(sig.issuer)}' as its issuer, but ` +
      `${sig.why} (a different CA with the same name?)`;
  else if (isSelfIssued(last))
    message =
      `'${certLabel(last)}' is self-signed and not in the trust bundle; add it ` +
      `to --ca only if you really trust it`;
  else
    message =
      `'${certLabel(last)}' was issued by '${formatDn(last.issuer)}', which is ` +
      `neither in the trust bundle nor among the given intermediates; pass the intermediate ` +
      `with --untrusted or the right CA with --ca`;
  r.problems.unshift({ code, message, depth: longestPartial.length - 1 });
  r.valid = false;
  return r;
}
