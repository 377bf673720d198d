import crypto from 'node:crypto';
import type tls from 'node:tls';
import { MtlsError, messageOf } from '../errors.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { checkOcspResponse, type OcspStatus } from '../pki/ocsp-check.js';
import { fetchOcsp } from './ocsp-fetch.js';
import { peerChain } from './dial.js';

/**
 * OCSP stapling (RFC 6066 8): a server sends its own certificate's OCSP status in the handshake, so its clients
 * need not ask the CA (no extra round trip, no leak of who talks to whom, no responder outage in their path).
 *
 * Server side, OcspStapler: answers Node's 'OCSPRequest' from a cache of checked responses per certificate, fetched
 * from the certificate's responder (its AIA OCSP URL, or a fixed one) and refreshed halfway to their nextUpdate,
 * with capped back-off on failure. A response is stapled only while current; a handshake never waits longer than
 * `waitMs` for a first fetch. It follows certificate rotation by itself: each request names the certificate in use.
 *
 * Client side, checkStaple: the staple is checked like any OCSP response (issuer or its delegated responder,
 * our certificate, current). 'request' refuses a revoked or unbelievable staple and accepts none; 'require' also
 * refuses a server that staples nothing.
 */

export type StapleEvent =
  | { event: 'ocsp-staple'; certificate: string; status: OcspStatus['status']; nextUpdate?: string; url: string }
  | { event: 'ocsp-staple-failed'; certificate: string; reason: string; retryInMs: number };

export interface StaplerOptions {
  /** The responder to ask; default: the OCSP URL in each certificate (AIA). */
  url?: string;
  /** Longest a handshake waits for the first response of a certificate. Default 1 s (then it goes without). */
  waitMs?: number;
  /** Deadline of one fetch. Default 5 s. */
  timeoutMs?: number;
  /** Each fetch and failure, for the log. */
  onEvent?: (e: StapleEvent) => void;
  /**
   * The response to staple for `certificate` (DER) changed: a fresh one, or null once the last one expired with no
   * fresh one to follow. For engines that hold the staple themselves (the proxy's native engine).
   */
  onStaple?: (certificate: Buffer, response: Buffer | null) => void;
}

interface Entry {
  cert: Certificate;
  issuer: Certificate;
  url: string;
  current?: OcspStatus;
  fetching?: Promise<void>;
  timer?: NodeJS.Timeout;
  expiry?: NodeJS.Timeout;
  failures: number;
  lastAsked: number;
}

/** Certificates a server staples for at once (its own, and the one rotated in); more means a misuse. */
const MAX_ENTRIES = 16;
const MIN_REFRESH_MS = 30_000;
const MAX_BACKOFF_MS = 5 * 60_000;

export class OcspStapler {
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  constructor(private readonly o: StaplerOptions = {}) {}

  /** Node's 'OCSPRequest' listener: `server.on('OCSPRequest', stapler.listener)`. */
  readonly listener = (
    certificate: Buffer,
    issuer: Buffer | null,
    callback: (err: Error | null, resp: Buffer | null) => void,
  ) => {
    this.staple(certificate, issuer).then(
      (der) => callback(null, der),
      () => callback(null, null),
    );
  };

  /** Staples for `server`'s certificates from now on. */
  attach(server: tls.Server): this {
    server.on('OCSPRequest', this.listener);
    server.once('close', () => this.close());
    return this;
  }

  /** Fetches the status of `cert` now (e.g. at start-up), so that the first handshake has it. */
  prime(cert: Certificate, issuer: Certificate): Promise<OcspStatus | undefined> {
    const e = this.entry(cert, issuer); // throws now when the certificate names no responder
    return this.fetch(e).then(() => e.current);
  }

  /** The DER response to staple for `certificate` (issued by `issuer`), or null when none is current. */
  async staple(certificate: Buffer, issuer: Buffer | null): Promise<Buffer | null> {
    if (this.closed || !issuer) return null;
    const key = keyOf(certificate);
    let e = this.entries.get(key);
    if (!e) e = this.entry(parseCertificate(certificate, 'our certificate'), parseCertificate(issuer, 'its issuer'));
    e.lastAsked = Date.now();
    if (!fresh(e.current) && !e.fetching) void this.fetch(e);
    if (!fresh(e.current) && e.fetching) {
      let t: NodeJS.Timeout | undefined;
      await Promise.race([e.fetching, new Promise((r) => (t = setTimeout(r, this.o.waitMs ?? 1000)))]);
      clearTimeout(t);
    }
    return fresh(e.current) ? e.current!.der : null;
  }

  close(): void {
    this.closed = true;
    for (const e of this.entries.values()) {
      clearTimeout(e.timer);
      clearTimeout(e.expiry);
    }
    this.entries.clear();
  }

  private entry(cert: Certificate, issuer: Certificate): Entry {
    const key = keyOf(cert.der);
    const known = this.entries.get(key);
    if (known) return known;
    const url = this.o.url ?? cert.ocspUrls?.[0];
    if (!url)
      throw new MtlsError(
        'BAD_INPUT',
        `cannot staple: the certificate '${cert.subject.map((a) => a.value).join(', ')}' names no OCSP responder; ` +
          'issue it from a CA made with `mtls ca init --url`, or give the responder URL',
      );
    if (this.entries.size >= MAX_ENTRIES) {
      // The certificate asked about least recently (a rotated-out one) goes.
      const [oldKey, old] = [...this.entries].sort((a, b) => a[1].lastAsked - b[1].lastAsked)[0]!;
      clearTimeout(old.timer);
      clearTimeout(old.expiry);
      this.entries.delete(oldKey);
    }
    const e: Entry = { cert, issuer, url, failures: 0, lastAsked: Date.now() };
    this.entries.set(key, e);
    return e;
  }

  private fetch(e: Entry): Promise<void> {
    if (e.fetching) return e.fetching;
    clearTimeout(e.timer);
    const label = e.cert.subject.map((a) => a.value).join(', ');
    e.fetching = fetchOcsp(e.url, e.cert, e.issuer, { timeoutMs: this.o.timeoutMs ?? 5000 })
      .then((s) => {
        if (this.closed) return; // closed while fetching: nothing is stapled any more
        e.current = s;
        e.failures = 0;
        this.o.onStaple?.(e.cert.der, s.der);
        clearTimeout(e.expiry);
        const expires = (s.nextUpdate?.getTime() ?? s.thisUpdate.getTime() + 24 * 3600e3) - Date.now();
        e.expiry = setTimeout(
          () => {
            if (e.current !== s) return;
            e.current = undefined;
            this.o.onStaple?.(e.cert.der, null);
          },
          Math.min(Math.max(expires, 0), 2 ** 31 - 1),
        );
        e.expiry.unref();
        this.o.onEvent?.({
          event: 'ocsp-staple',
          certificate: label,
          status: s.status,
          url: e.url,
          ...(s.nextUpdate ? { nextUpdate: s.nextUpdate.toISOString() } : {}),
        });
        // Halfway to nextUpdate, as RFC 5019 6 suggests caches do; a response without one is fetched hourly.
        const until = (s.nextUpdate?.getTime() ?? Date.now() + 2 * 3600e3) - Date.now();
        this.schedule(e, Math.max(MIN_REFRESH_MS, until / 2));
      })
      .catch((err: unknown) => {
        e.failures++;
        const retry = Math.min(MAX_BACKOFF_MS, 2000 * 2 ** Math.min(e.failures - 1, 10));
        this.o.onEvent?.({ event: 'ocsp-staple-failed', certificate: label, reason: messageOf(err), retryInMs: retry });
        this.schedule(e, retry);
      })
      .finally(() => {
        e.fetching = undefined;
      });
    return e.fetching;
  }

  private schedule(e: Entry, ms: number): void {
    if (this.closed) return;
    e.timer = setTimeout(() => void this.fetch(e), ms);
    e.timer.unref();
  }
}

const keyOf = (der: Buffer) => crypto.hash('sha256', der, 'base64');

/** Whether a stapled response may still be sent: it must be current (a stale staple makes strict clients fail). */
function fresh(s: OcspStatus | undefined): boolean {
  if (!s) return false;
  const until = s.nextUpdate?.getTime() ?? s.thisUpdate.getTime() + 24 * 3600e3;
  return until > Date.now();
}

/** How a client treats the server's staple: 'request' checks one if sent; 'require' refuses a server without. */
export type StapleMode = 'request' | 'require';

/**
 * Collects the staple a client socket receives ('OCSPResponse' comes before 'secureConnect'); the connection must
 * be made with `requestOCSP: true`.
 */
export function collectStaple(socket: tls.TLSSocket): () => Buffer | undefined {
  let staple: Buffer | undefined;
  socket.once('OCSPResponse', (r: Buffer | undefined) => {
    if (r && r.length) staple = r;
  });
  return () => staple;
}

const STAPLED = new Map<string, true>();
const MAX_REMEMBERED = 10_000;
const sessionKey = (s: Buffer) => crypto.hash('sha256', s, 'base64');

/** What a client made of the server's staple: the checked status, or why it refuses the server. */
export interface StapleVerdict {
  error?: MtlsError;
  status?: OcspStatus;
}

/**
 * At 'secureConnect': the server's stapled status, checked, or why it refuses the server (CERT_REVOKED,
 * REVOCATION_UNKNOWN). A resumed session carries no staple: under 'require' it is accepted only if its full
 * handshake had a good one.
 */
export function checkStaple(socket: tls.TLSSocket, staple: Buffer | undefined, mode: StapleMode): StapleVerdict {
  const refuse = (why: string) => ({ error: new MtlsError('REVOCATION_UNKNOWN', why) });
  if (socket.isSessionReused()) {
    const s = socket.getSession();
    if (mode === 'require' && !(s && STAPLED.has(sessionKey(s))))
      return refuse('resumed a session whose server status was never stapled here; connect without the session');
    return {};
  }
  if (!staple) {
    if (mode === 'request') return {};
    return refuse(
      'the server stapled no OCSP response, and one is required: enable stapling on the server, or do not require it',
    );
  }
  const [leaf, issuer] = peerChain(socket);
  if (!leaf || !issuer) return refuse('cannot check the stapled OCSP response: the server sent no issuer certificate');
  let status: OcspStatus;
  try {
    status = checkOcspResponse(staple, leaf, issuer, { what: 'the stapled OCSP response' });
  } catch (err) {
    return { error: err instanceof MtlsError ? err : new MtlsError('REVOCATION_UNKNOWN', messageOf(err)) };
  }
  if (status.status === 'revoked')
    return {
      status,
      error: new MtlsError(
        'CERT_REVOKED',
        `the server's certificate (serial ${leaf.serialHex}) is revoked since ${status.revokedAt?.toISOString()} (${status.reason}), says its own stapled OCSP response`,
      ),
    };
  if (status.status === 'unknown')
    return { status, ...refuse("the server's stapled OCSP response says its certificate is unknown to the CA") };
  socket.on('session', (s: Buffer) => {
    STAPLED.set(sessionKey(s), true);
    if (STAPLED.size > MAX_REMEMBERED) STAPLED.delete(STAPLED.keys().next().value as string);
  });
  return { status };
}

/**
 * Sets up stapling for a server whose certificate chain is `chain` (leaf first, its issuer next): checks now that
 * the leaf can be stapled for (a responder URL, its issuer in the chain), attaches `stapler` and fetches the first
 * response in the background.
 */
export function stapleFor(server: tls.Server, stapler: OcspStapler, chain: readonly Certificate[]): OcspStapler {
  const [leaf, issuer] = stapledPair(chain);
  void stapler.prime(leaf, issuer).catch(() => undefined); // throws now for a certificate that names no responder
  stapler.attach(server);
  return stapler;
}

/** The leaf and its issuer of a chain to staple for: the issuer must follow the leaf (its CertID needs it). */
export function stapledPair(chain: readonly Certificate[]): [Certificate, Certificate] {
  const [leaf, issuer] = chain;
  if (!leaf || !issuer)
    throw new MtlsError(
      'BAD_INPUT',
      'cannot staple: the server certificate file holds no issuer certificate; put the intermediate after the leaf',
    );
  return [leaf, issuer];
}
