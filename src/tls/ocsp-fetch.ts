import http from 'node:http';
import { MtlsError } from '../errors.js';
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
  const body = await new Promise<Buffer>((resolve, reject) => {
    const fail = (why: string) => reject(unknown(`the OCSP responder ${url} ${why}`));
    const r = http.request(
      target,
      {
        method: 'POST',
        headers: { 'content-type': 'application/ocsp-request', 'content-length': req.der.length },
      },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume();
          return fail(`answered HTTP ${res.statusCode}`);
        }
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > MAX_OCSP_RESPONSE_BYTES) {
            r.destroy();
            return fail(`sent more than ${MAX_OCSP_RESPONSE_BYTES} bytes`);
          }
          chunks.push(d);
        });
        res.on('end', () => resolve(Buffer.concat(chunks)));
        res.on('error', (err) => fail(`broke off (${err.message})`));
      },
    );
    const deadline = setTimeout(() => {
      r.destroy();
      fail(`did not answer within ${o.timeoutMs ?? 5000} ms`);
    }, o.timeoutMs ?? 5000);
    r.on('close', () => clearTimeout(deadline));
    r.on('error', (err) => fail(`cannot be reached (${(err as NodeJS.ErrnoException).code ?? err.message})`));
    r.end(req.der);
  });
  const checked: { now?: Date; nonce?: Buffer; what: string } = { what: `the answer of ${url}` };
  if (o.now) checked.now = o.now();
  if (req.nonce) checked.nonce = req.nonce;
  return checkOcspResponse(body, cert, issuer, checked);
}
