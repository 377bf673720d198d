import { MtlsError, messageOf } from '../errors.js';
import { exchange, type HttpAnswer } from '../io/http-exchange.js';
import type { Certificate } from '../pki/certificate.js';
import { checkOcspResponse, MAX_OCSP_RESPONSE_BYTES, ocspRequest, type OcspStatus } from '../pki/ocsp-check.js';

const unknown = (why: string) => new MtlsError('REVOCATION_UNKNOWN', why);

/**
 * Asks the OCSP responder at `url` (http only, as RFC 6960 A.1 and every public CA use) about `cert`, by POST,
 * and checks the answer. Bounded: `timeoutMs` for the whole exchange (default 5 s), 64 KiB of response.
 * Throws REVOCATION_UNKNOWN when the responder cannot be reached or its answer cannot be trusted.
 */
export async function fetchOcsp(
  url: string,
  cert: Certificate,
  issuer: Certificate,
  o: { timeoutMs?: number; now?: () => Date } = {},
): Promise<OcspStatus> {
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    throw unknown(`the OCSP URL '${url}' is not a URL`);
  }
  if (target.protocol !== 'http:') throw unknown(`the OCSP URL '${url}' is not http:// (OCSP answers are signed)`);
  const req = ocspRequest(cert, issuer);
  const timeoutMs = o.timeoutMs ?? 5000;
  let answer: HttpAnswer;
  try {
    answer = await exchange(target, {
      method: 'POST',
      headers: { 'content-type': 'application/ocsp-request', 'content-length': req.der.length },
      body: req.der,
      timeoutMs,
      maxBytes: MAX_OCSP_RESPONSE_BYTES,
    });
  } catch (err) {
    throw unknown(`the OCSP responder ${url} ${(err as Error).message}`);
  }
  if (answer.status !== 200) throw unknown(`the OCSP responder ${url} answered HTTP ${answer.status}`);
  const body = answer.body;
  const checked: { now?: Date; nonce?: Buffer; what: string } = { what: `the answer of ${url}` };
  if (o.now) checked.now = o.now();
  if (req.nonce) checked.nonce = req.nonce;
  return checkOcspResponse(body, cert, issuer, checked);
}

/** What is known of one certificate by OCSP, and from where (`source`: words for a person). */
export type OcspOutcome =
  { status: OcspStatus; source: string; url?: string } | { failed: string; source: string; url?: string };

/**
 * The OCSP status of `cert` as a client sees it: from `staple` when there is one (raw, checked here against
 * `issuer`, or already checked), else from the responder at `url` (default: the first in its AIA). Undefined when
 * there is neither. Never throws: what cannot be had, or believed, is `failed` with the reason. The one place doctor,
 * connect/trace (chainRevocation) and verify --ocsp take this from.
 */
export async function ocspOutcome(
  cert: Certificate,
  issuer: Certificate,
  o: { staple?: Buffer | OcspStatus; url?: string; timeoutMs?: number; now?: Date } = {},
): Promise<OcspOutcome | undefined> {
  const now = o.now ?? new Date();
  if (o.staple) {
    const source = 'its stapled OCSP response';
    if (!Buffer.isBuffer(o.staple)) return { status: o.staple, source };
    try {
      return { status: checkOcspResponse(o.staple, cert, issuer, { now, what: 'the stapled OCSP response' }), source };
    } catch (err) {
      return { failed: messageOf(err), source };
    }
  }
  const url = o.url ?? cert.ocspUrls?.[0];
  if (!url) return undefined;
  const source = `the OCSP responder ${url}`;
  try {
    return {
      status: await fetchOcsp(url, cert, issuer, { timeoutMs: o.timeoutMs ?? 3000, now: () => now }),
      source,
      url,
    };
  } catch (err) {
    return { failed: messageOf(err), source, url };
  }
}
