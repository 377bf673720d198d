import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MtlsError, messageOf } from '../errors.js';
import { exchange } from '../io/http-exchange.js';
import { MAX_INPUT, stageFiles } from '../io/files.js';
import { readCrls } from '../pki/crl.js';
import { encodePem } from '../pki/pem.js';
import { printable } from '../pki/names.js';

/**
 * CRLs fetched from URLs (a CA's CRL distribution points) and kept fresh: polled every `intervalMs` with a
 * conditional GET (ETag, Last-Modified: an unchanged CRL costs one small answer), and sooner when a CRL's
 * nextUpdate comes first. Every answer is bounded (deadline, size) and must parse as CRLs, or it is not taken: the
 * data in force stays until a good answer replaces it, and its own nextUpdate decides when it is stale (hard-fail
 * or soft-fail, as for a CRL file). Signatures are checked by whoever loads the CRLs (CrlSet, the proxy), which
 * knows the trust bundle.
 */

export type CrlFetchEvent =
  | { event: 'crl-fetched'; url: string; crls: number; entries: number; nextUpdate?: string }
  | { event: 'crl-fetch-failed'; url: string; reason: string; retryInMs: number };

export interface CrlFetchOptions {
  /** How often each URL is asked again. Default 30 s. */
  intervalMs?: number;
  /** Deadline of one fetch. Default 10 s. */
  timeoutMs?: number;
  onEvent?: (e: CrlFetchEvent) => void;
}

const MIN_INTERVAL_MS = 1000;

interface Source {
  url: URL;
  pem?: Buffer;
  nextUpdate?: number;
  etag?: string;
  lastModified?: string;
  failures: number;
}

export class CrlFetcher {
  private readonly sources: Source[];
  private timer?: NodeJS.Timeout;
  private stopped = false;
  private onChange?: (pem: Buffer) => void;
  private last?: Buffer;

  constructor(
    urls: readonly string[],
    private readonly o: CrlFetchOptions = {},
  ) {
    if (urls.length === 0 || urls.length > MAX_CRL_URLS)
      throw new MtlsError('USAGE', `give 1 to ${MAX_CRL_URLS} CRL URLs (${urls.length} given)`);
    this.sources = urls.map((u) => ({ url: checkCrlUrl(u), failures: 0 }));
    if (o.intervalMs !== undefined && o.intervalMs < MIN_INTERVAL_MS)
      throw new MtlsError('USAGE', `the CRL refresh interval must be at least ${MIN_INTERVAL_MS} ms`);
  }

  /** Fetches every URL once; throws REVOCATION_UNKNOWN naming the first that fails. Returns the CRLs as PEM. */
  async fetchAll(): Promise<Buffer> {
    for (const s of this.sources) {
      const why = await this.fetch(s);
      if (why) throw new MtlsError('REVOCATION_UNKNOWN', `the CRL at ${s.url.href} ${why}`);
    }
    return (this.last = this.combined());
  }

  /** Polls from now on, calling `onChange` with every CRL set that differs from the last one. */
  watch(onChange: (pem: Buffer) => void): this {
    this.onChange = onChange;
    this.schedule();
    return this;
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  /** Fetches one URL; undefined when done (new or unchanged), else why not. */
  private async fetch(s: Source): Promise<string | undefined> {
    const headers: Record<string, string> = { accept: 'application/pkix-crl, application/x-pem-file' };
    if (s.pem && s.etag) headers['if-none-match'] = s.etag;
    if (s.pem && s.lastModified) headers['if-modified-since'] = s.lastModified;
    let why: string | undefined;
    try {
      const a = await exchange(s.url, { headers, timeoutMs: this.o.timeoutMs ?? 10_000, maxBytes: MAX_INPUT.crl });
      if (a.status === 304 && s.pem) {
        s.failures = 0;
        return undefined;
      }
      if (a.status !== 200) throw new Error(`answered HTTP ${a.status}`);
      const crls = readCrls(a.body, `the CRL at ${s.url.href}`);
      s.pem = Buffer.from(crls.map((c) => encodePem('X509 CRL', c.der)).join(''), 'latin1');
      const next = crls.map((c) => c.nextUpdate?.getTime() ?? Infinity);
      s.nextUpdate = Math.min(...next);
      s.etag = typeof a.headers.etag === 'string' ? a.headers.etag : undefined;
      s.lastModified = a.headers['last-modified'];
      s.failures = 0;
      this.o.onEvent?.({
        event: 'crl-fetched',
        url: s.url.href,
        crls: crls.length,
        entries: crls.reduce((n, c) => n + c.revoked.size, 0),
        ...(Number.isFinite(s.nextUpdate) ? { nextUpdate: new Date(s.nextUpdate).toISOString() } : {}),
      });
      return undefined;
    } catch (err) {
      why = err instanceof MtlsError ? err.message : (err as Error).message;
    }
    s.failures++;
    this.o.onEvent?.({ event: 'crl-fetch-failed', url: s.url.href, reason: why, retryInMs: this.retryMs(s) });
    return why;
  }

  private retryMs(s: Source): number {
    return Math.min(this.interval(), 1000 * 2 ** Math.min(s.failures, 10));
  }

  private interval(): number {
    return this.o.intervalMs ?? 30_000;
  }

  private combined(): Buffer {
    return Buffer.concat(this.sources.map((s) => s.pem ?? Buffer.alloc(0)));
  }

  private schedule(): void {
    if (this.stopped) return;
    const now = Date.now();
    // A CRL due before the next poll is asked for at its nextUpdate; one already past it, at the usual interval.
    const due = (s: Source) => (s.nextUpdate !== undefined && s.nextUpdate > now ? s.nextUpdate - now : Infinity);
    const waits = this.sources.map((s) =>
      s.failures ? this.retryMs(s) : Math.max(MIN_INTERVAL_MS, Math.min(this.interval(), due(s))),
    );
    this.timer = setTimeout(() => void this.poll(), Math.min(...waits));
    this.timer.unref();
  }

  private async poll(): Promise<void> {
    for (const s of this.sources) await this.fetch(s);
    if (this.stopped) return;
    const pem = this.combined();
    if (!this.last || !pem.equals(this.last)) {
      this.last = pem;
      try {
        this.onChange?.(pem);
      } catch (err) {
        this.o.onEvent?.({
          event: 'crl-fetch-failed',
          url: '(all)',
          reason: messageOf(err),
          retryInMs: this.interval(),
        });
      }
    }
    this.schedule();
  }
}

/** A CRL URL as `what` (a flag, or a config key) gives it: http(s), without credentials; else one line. */
export function checkCrlUrl(text: string, what = '--crl-url'): URL {
  let u: URL | undefined;
  try {
    u = new URL(text);
  } catch {
    u = undefined;
  }
  if (!u || !['http:', 'https:'].includes(u.protocol) || u.username || u.password)
    throw new MtlsError(
      'USAGE',
      `${what}: '${printable(text)}' must be an http(s) URL without credentials, ` +
        'like http://ca.internal:9080/crl/intermediate.crl',
    );
  return u;
}

/** At most this many CRL URLs per server. */
export const MAX_CRL_URLS = 8;

/**
 * For the CLI (serve, proxy): fetches `urls` once (or throws), writes them to a CRL file in a private directory
 * (0700), and rewrites that file atomically whenever they change, so that the server's CRL file watcher takes them
 * in exactly as it takes a local `--crl`.
 */
export async function crlFileFromUrls(
  urls: readonly string[],
  o: CrlFetchOptions = {},
): Promise<{ file: string; fetcher: CrlFetcher; close: () => void }> {
  const fetcher = new CrlFetcher(urls, o);
  const first = await fetcher.fetchAll();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtls-crl-'));
  const file = path.join(dir, 'crl.pem');
  const write = (pem: Buffer) => stageFiles([{ path: file, data: pem, mode: 0o600 }], { overwrite: true }).commit();
  write(first);
  fetcher.watch(write);
  const close = () => {
    fetcher.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  return { file, fetcher, close };
}
