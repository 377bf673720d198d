import http from 'node:http';
import https from 'node:https';

/** What came back from `exchange`. */
export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/**
 * One bounded HTTP(S) request, for fetching revocation data from a peer we do not control: a deadline for the whole
 * exchange (connect, send, every byte of the answer), a cap on the answer's size, no redirects followed. Rejects
 * with a plain Error whose message completes "the server at URL ..." (cannot be reached, did not answer within,
 * sent more than).
 */
export function exchange(
  url: URL,
  o: {
    method?: 'GET' | 'POST';
    headers?: Record<string, string | number>;
    body?: Buffer;
    timeoutMs: number;
    maxBytes: number;
    /** For https: what to trust and present (ca, cert, key, checkServerIdentity...); a new connection each time. */
    tls?: import('node:tls').ConnectionOptions;
  },
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    let done = false;
    const settle = (err: Error | null, answer?: HttpAnswer) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      if (err) {
        r.destroy();
        reject(err);
      } else resolve(answer!);
    };
    const r = (url.protocol === 'https:' ? https : http).request(
      url,
      { method: o.method ?? 'GET', headers: o.headers ?? {}, ...(o.tls ? { ...o.tls, agent: false } : {}) },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (d: Buffer) => {
          size += d.length;
          if (size > o.maxBytes) return settle(new Error(`sent more than ${o.maxBytes} bytes`));
          chunks.push(d);
        });
        res.on('end', () =>
          settle(null, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', (err) => settle(new Error(`broke off (${err.message})`)));
      },
    );
    const deadline = setTimeout(() => settle(new Error(`did not answer within ${o.timeoutMs} ms`)), o.timeoutMs);
    r.on('error', (err: NodeJS.ErrnoException) =>
      settle(
        new Error(
          // A TLS refusal says why in its message (the server's name, an unknown CA); a network error in its code.
          /^E[A-Z]+$/.test(err.code ?? '')
            ? `cannot be reached (${err.code})`
            : `refused the connection (${err.message})`,
        ),
      ),
    );
    r.end(o.body);
  });
}
