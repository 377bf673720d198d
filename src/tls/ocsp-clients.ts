import crypto from 'node:crypto';
import { MtlsError, messageOf } from '../errors.js';
import type { Certificate } from '../pki/certificate.js';
import { certLabel } from '../pki/path-rules.js';
import { issuedBy, type OcspStatus } from '../pki/ocsp-check.js';
import { fetchOcsp } from './ocsp-fetch.js';

/**
 * A server's OCSP check of its clients: each client certificate is asked about at its responder (the AIA OCSP URL
 * it names, or a fixed one), answers are checked (pki/ocsp-check.ts) and cached for `cacheMs` (5 s by default, so a
 * revocation is in force within seconds) and never past their nextUpdate; concurrent handshakes of one certificate
 * share one request. When no trustworthy answer can be had (the responder down, slow or lying, no URL), the client
 * is refused (hard-fail, REVOCATION_UNKNOWN) unless `softFail`, which admits it and says so.
 */

export type OcspClientEvent =
  | { event: 'ocsp-client'; certificate: string; serial: string; status: OcspStatus['status']; url: string }
  | { event: 'ocsp-client-unknown'; certificate: string; serial: string; reason: string; admitted: boolean };

export interface OcspClientOptions {
  /** The responder to ask about every client; default: the one each client certificate names. */
  url?: string;
  /** Admit a client whose status cannot be had (logged, counted) instead of refusing it. Default false. */
  softFail?: boolean;
  /** Deadline of one request to the responder. Default 3 s. */
  timeoutMs?: number;
  /** How long an answer is believed without asking again (capped by its nextUpdate). Default 5 s. */
  cacheMs?: number;
  onEvent?: (e: OcspClientEvent) => void;
}

const MAX_CACHED = 10_000;
const MAX_ISSUERS = 256;

type Verdict = { status: OcspStatus; url: string } | { why: string };

const cacheKey = (leaf: Certificate, issuer: Certificate) =>
  crypto.hash('sha256', Buffer.concat([issuer.spkiDer, leaf.serial]), 'base64');

function revokedError(leaf: Certificate, v: Verdict): MtlsError | undefined {
  if ('why' in v || v.status.status !== 'revoked') return undefined;
  return new MtlsError(
    'CERT_REVOKED',
    `'${certLabel(leaf)}' (serial ${leaf.serialHex}) is revoked since ${v.status.revokedAt?.toISOString()} ` +
      `(${v.status.reason}), says the OCSP responder ${v.url}`,
  );
}

export class OcspClientChecker {
  private readonly cache = new Map<string, { verdict: Verdict; until: number }>();
  private readonly asking = new Map<string, Promise<Verdict>>();
  /** Issuers seen in verified client chains, by subject: a resumed session carries the leaf only. */
  private readonly issuers = new Map<string, Certificate>();

  constructor(private readonly o: OcspClientOptions = {}) {}

  /**
   * Why the client of a verified `chain` (leaf first; a resumed session's leaf alone) must be refused now:
   * CERT_REVOKED, or REVOCATION_UNKNOWN under hard-fail; undefined to admit it.
   */
  async failure(chain: readonly Certificate[]): Promise<MtlsError | undefined> {
    const [leaf, next] = chain;
    if (!leaf) return undefined;
    // Only an issuer whose key signed the leaf is learnt: a client's chain may carry an impostor of the same name.
    const sent = next && issuedBy(leaf, next) ? next : undefined;
    if (sent) this.learn(sent);
    const issuer = sent ?? this.issuers.get(leaf.issuerDer.toString('base64'));
    const v = issuer
      ? await this.verdict(leaf, issuer)
      : { why: `the issuer of '${certLabel(leaf)}' was never seen in a full handshake` };
    const label = certLabel(leaf);
    if ('why' in v || v.status.status === 'unknown') {
      const reason = 'why' in v ? v.why : `the OCSP responder ${v.url} does not know it`;
      const admitted = this.o.softFail === true;
      this.o.onEvent?.({ event: 'ocsp-client-unknown', certificate: label, serial: leaf.serialHex, reason, admitted });
      if (admitted) return undefined;
      return new MtlsError(
        'REVOCATION_UNKNOWN',
        `the revocation status of '${label}' (serial ${leaf.serialHex}) cannot be had: ${reason}; refused (hard-fail)`,
      );
    }
    return revokedError(leaf, v);
  }

  /**
   * Whether an admitted client's certificate is revoked now, by its responder (the cached answer while it is fresh):
   * CERT_REVOKED, else undefined. No answer is not a verdict here (the connection was admitted under one), so it
   * is neither reported nor counted; the next look asks again. The issuer must have been seen (at its admission).
   */
  async revokedNow(leaf: Certificate): Promise<MtlsError | undefined> {
    const issuer = this.issuers.get(leaf.issuerDer.toString('base64'));
    if (!issuer) return undefined;
    // Not asked again for a while after no answer: a responder that is down is not asked about every open
    // connection on every look.
    const key = cacheKey(leaf, issuer);
    if ((this.unanswered.get(key) ?? 0) > Date.now()) return undefined;
    const v = await this.verdict(leaf, issuer);
    if ('why' in v) {
      if (this.unanswered.size >= MAX_CACHED) this.unanswered.clear();
      this.unanswered.set(key, Date.now() + (this.o.cacheMs ?? 5000));
    } else this.unanswered.delete(key);
    return revokedError(leaf, v);
  }

  /** Until when a certificate whose status could not be had is not asked about again by revokedNow. */
  private readonly unanswered = new Map<string, number>();

  private learn(issuer: Certificate): void {
    const key = issuer.subjectDer.toString('base64');
    if (this.issuers.has(key)) return;
    if (this.issuers.size >= MAX_ISSUERS) this.issuers.delete(this.issuers.keys().next().value as string);
    this.issuers.set(key, issuer);
  }

  private async verdict(leaf: Certificate, issuer: Certificate): Promise<Verdict> {
    const key = cacheKey(leaf, issuer);
    const now = Date.now();
    const cached = this.cache.get(key);
    if (cached && cached.until > now) return cached.verdict;
    const pending = this.asking.get(key);
    if (pending) return pending;
    const url = this.o.url ?? leaf.ocspUrls?.[0];
    const ask: Promise<Verdict> = url
      ? fetchOcsp(url, leaf, issuer, { timeoutMs: this.o.timeoutMs ?? 3000 }).then(
          (status): Verdict => {
            this.o.onEvent?.({
              event: 'ocsp-client',
              certificate: certLabel(leaf),
              serial: leaf.serialHex,
              status: status.status,
              url,
            });
            return { status, url };
          },
          (err: unknown): Verdict => ({ why: messageOf(err) }),
        )
      : Promise.resolve({ why: `'${certLabel(leaf)}' names no OCSP responder` });
    this.asking.set(key, ask);
    const v = await ask.finally(() => this.asking.delete(key));
    // Failures are not cached: the next handshake asks again.
    if (!('why' in v)) {
      const next = v.status.nextUpdate?.getTime() ?? Infinity;
      if (this.cache.size >= MAX_CACHED) this.cache.clear();
      this.cache.set(key, { verdict: v, until: Math.min(Date.now() + (this.o.cacheMs ?? 5000), next) });
    }
    return v;
  }
}
