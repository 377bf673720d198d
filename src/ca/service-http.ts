import type http from 'node:http';
import { MtlsError, messageOf, type MtlsErrorCode } from '../errors.js';

/**
 * The CA service's JSON over HTTP (issue 15): one error shape, `{ "error": { "code", "message" } }`, with an HTTP
 * status per code, and bounded JSON request bodies.
 */

const MAX_BODY_BYTES = 64 * 1024;

/** HTTP status of each error code the API answers with (anything else is a 500, its message not shown). */
export const HTTP_STATUS: Partial<Record<MtlsErrorCode, number>> = {
  BAD_INPUT: 400,
  BAD_CSR: 400,
  BAD_NAME: 400,
  BAD_SPIFFE_ID: 400,
  BAD_DURATION: 400,
  USAGE: 400,
  UNSUPPORTED: 400,
  TOKEN_INVALID: 401,
  TOKEN_EXPIRED: 401,
  NO_CLIENT_CERT: 401,
  CERT_UNTRUSTED: 401,
  CERT_EXPIRED: 401,
  CERT_REVOKED: 401,
  CERT_NOT_YET_VALID: 401,
  PEER_NOT_ALLOWED: 403,
  NAME_NOT_GRANTED: 403,
  NAME_NOT_PERMITTED: 403,
  CSR_REFUSED: 403,
  RENEWAL_REFUSED: 403,
  TOKEN_SPENT: 409,
  NOT_REVOCABLE: 409,
  VALIDITY_EXCEEDS_ISSUER: 409,
};

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': data.length,
    'cache-control': 'no-store',
  });
  res.end(data);
}

export function sendError(res: http.ServerResponse, err: unknown, onError: (m: string) => void): void {
  if (res.headersSent) return void res.destroy();
  if (err instanceof HttpError) return sendJson(res, err.status, { error: { code: err.code, message: err.message } });
  const status = err instanceof MtlsError ? HTTP_STATUS[err.code] : undefined;
  if (err instanceof MtlsError && status)
    return sendJson(res, status, { error: { code: err.code, message: err.message } });
  // A fault of ours (or of the store): logged here, not shown to the caller.
  onError(messageOf(err));
  sendJson(res, 500, { error: { code: 'INTERNAL', message: 'the CA could not complete this request; see its log' } });
}

/** The request's JSON object body: at most 64 KiB, application/json. */
export function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    if (!/^application\/json\b/i.test(req.headers['content-type'] ?? ''))
      return reject(new HttpError(415, 'BAD_INPUT', 'send the request body as application/json'));
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_BODY_BYTES) {
        req.destroy();
        reject(new HttpError(413, 'BAD_INPUT', `the request body is over ${MAX_BODY_BYTES / 1024} KiB`));
      } else chunks.push(d);
    });
    req.on('error', reject);
    req.on('end', () => {
      try {
        const v = JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch {
        reject(new HttpError(400, 'BAD_INPUT', 'the request body is not a JSON object'));
      }
    });
  });
}
