import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { messageOf, MtlsError } from '../errors.js';
import { MAX_INPUT, withIdentifiedFile } from '../io/files.js';
import type { Certificate } from '../pki/certificate.js';
import { formatDn } from '../pki/names.js';
import {
  certIdIsFor,
  ocspAnswerParts,
  ocspFailure,
  parseOcspRequest,
  signOcspAnswer,
  type CertStatus,
  type OcspAnswerParts,
  type SingleAnswer,
} from '../pki/ocsp.js';
import type { CertificateStore } from '../store/store.js';
import { crlPaths } from './revocation.js';
import { DAY } from './init.js';
import { issueResponderCertificate, readSigner, RootResponder, writeSigner, type Signer } from './ocsp-signers.js';

/** What the responder needs of the CA (CertificateAuthority provides it). */
export interface OcspCa {
  home: string;
  root: Certificate;
  intermediate: Certificate;
  /** The root's key when it is at hand (often kept offline): it issues the responder for the root's certificates. */
  rootSigningKey?(): KeyObject | undefined;
  store: CertificateStore;
  signingKey(): KeyObject;
}

/** An answer, and what a new answer to the same CertIDs is signed from (OcspResponder.answerFor). */
export interface OcspAnswer {
  der: Buffer;
  /** How long (ms) the same CertIDs may be answered again from `parts`, by `signer`; 0: not at all. */
  cacheMs: number;
  parts?: OcspAnswerParts;
  signer?: { cert: Certificate; key: KeyObject };
}

const RESPONDER_LIFETIME_MS = 7 * DAY;
const RESPONDER_RENEW_MS = 2 * DAY;
/** How long an answer says it is good for (nextUpdate); a revocation changes the next answer at once anyway. */
const ANSWER_LIFETIME_MS = 3600e3;
const MAX_REQUEST_BYTES = 16 * 1024;
const MAX_CACHED = 10_000;
/** How often the inventory is asked whether the responder certificate in use was revoked. */
const SIGNER_CHECK_MS = 5000;

/**
 * An OCSP responder for the intermediate's leaves (RFC 6960, RFC 5019). Every answer reads the inventory, so a
 * revocation or a new certificate shows in the next answer; signed answers without a nonce are cached by
 * (CertID, status) until half their lifetime. Signed by a delegated responder certificate (id-kp-OCSPSigning,
 * id-pkix-ocsp-nocheck, 7 days) that it issues from the intermediate and renews two days before it expires.
 */
export class OcspResponder {
  private signer?: Signer;
  private readonly rootResponder: RootResponder;
  private rootSignerSerial?: string;
  private readonly cache = new Map<string, { parts: OcspAnswerParts; der?: Buffer; until: number }>();

  constructor(private readonly ca: OcspCa) {
    this.rootResponder = new RootResponder(ca);
  }

  /** The DER OCSPResponse for a DER OCSPRequest: never throws (malformedRequest, unauthorized, internalError). */
  async answer(request: Buffer, now = new Date()): Promise<Buffer> {
    return (await this.answerFor(request, now)).der;
  }

  /**
   * The answer, and for how long the same CertIDs may be answered from it again (`cacheMs`, 0: not at all): only
   * when every certificate is good or revoked (an unknown serial may be issued the next moment; a failure is not an
   * answer). `parts` and `signer` are what a new answer to them is signed from (with another nonce). A revocation
   * makes them stale at once: whoever keeps them watches `watchRevocations`.
   */
  async answerFor(request: Buffer, now = new Date()): Promise<OcspAnswer> {
    let parsed;
    try {
      parsed = parseOcspRequest(request);
    } catch {
      return { der: ocspFailure('malformedRequest'), cacheMs: 0 };
    }
    try {
      // One request, one issuer: an answer has one signer, the issuer's delegated responder.
      const byRoot = parsed.certIds.every((id) => certIdIsFor(id, this.ca.root));
      if (!byRoot && !parsed.certIds.every((id) => certIdIsFor(id, this.ca.intermediate)))
        return { der: ocspFailure('unauthorized'), cacheMs: 0 };
      const rootSigner = byRoot ? this.rootResponder.signerNow(now) : undefined;
      if (byRoot && !rootSigner) return { der: ocspFailure('unauthorized'), cacheMs: 0 };
      const answers: SingleAnswer[] = [];
      for (const certId of parsed.certIds)
        answers.push({
          certId,
          status: byRoot ? this.rootResponder.statusOf(certId.serialHex) : await this.statusOf(certId.serialHex),
        });
      const key = answers.map((a) => `${a.certId.der.toString('hex')}:${JSON.stringify(a.status)}`).join();
      const reusable = answers.every((a) => a.status.status !== 'unknown');
      // First the signer: a new one (renewed, or the old one revoked) empties the cache of the old one's answers.
      const signer = rootSigner ?? (await this.responder(now));
      if (rootSigner && rootSigner.cert.serialHex !== this.rootSignerSerial) {
        this.rootSignerSerial = rootSigner.cert.serialHex;
        this.cache.clear();
      }
      let kept = this.cache.get(key);
      if (!kept || kept.until <= now.getTime()) {
        const parts = ocspAnswerParts(answers, {
          signer: signer.cert,
          thisUpdate: now,
          nextUpdate: new Date(now.getTime() + ANSWER_LIFETIME_MS),
        });
        if (this.cache.size >= MAX_CACHED) this.cache.clear();
        this.cache.set(key, (kept = { parts, until: now.getTime() + ANSWER_LIFETIME_MS / 2 }));
      }
      // A nonce makes the answer this request's own: signed afresh, never kept whole.
      const der = parsed.nonce
        ? signOcspAnswer(kept.parts, signer.key, now, parsed.nonce)
        : (kept.der ??= signOcspAnswer(kept.parts, signer.key, now));
      return reusable ? { der, cacheMs: kept.until - now.getTime(), parts: kept.parts, signer } : { der, cacheMs: 0 };
    } catch {
      return { der: ocspFailure('internalError'), cacheMs: 0 };
    }
  }

  /**
   * Calls `onChange` after each revocation (the inventory's revocation mark moved; any process, any replica),
   * within `everyMs`, and at once when a file of this home or its CRL directory changes (a revocation on this
   * machine commits and publishes there). Before it
   * calls, it checks that the responder certificate was not the one revoked, so that no answer made after
   * `onChange` is signed by it. Returns the function that stops watching.
   */
  watchRevocations(onChange: () => void, onError: (m: string) => void, everyMs = 100): () => void {
    let mark: number | undefined;
    let busy = false;
    let again = false;
    let failing: string | undefined;
    const look = async () => {
      if (busy) return void (again = true);
      busy = true;
      try {
        do {
          again = false;
          const now = await this.ca.store.revocationMark();
          if (mark !== undefined && now !== mark) {
            this.signerCheckedAt = 0; // ask the inventory about the signer now, not in up to 5 s
            await this.responder();
            onChange();
          }
          mark = now;
          failing = undefined;
        } while (again);
      } catch (err) {
        const why = `cannot read the inventory's revocation mark: ${messageOf(err)}`;
        if (why !== failing) onError(why); // once per cause, not every 100 ms
        failing = why;
        onChange(); // not knowing is not "nothing changed": what was kept is dropped
      } finally {
        busy = false;
      }
    };
    void look();
    const timer = setInterval(() => void look(), everyMs);
    // The home holds the SQLite inventory (a commit writes there) and the CRL directory (a revocation publishes
    // there): a change to either is looked at at once. The poll covers the rest (PostgreSQL, other machines).
    const watchers: fs.FSWatcher[] = [];
    for (const dir of [this.ca.home, path.dirname(crlPaths(this.ca.home).intermediate)]) {
      try {
        const w = fs.watch(dir, () => void look());
        w.on('error', () => w.close());
        watchers.push(w);
      } catch {
        // not there (yet): the poll covers it
      }
    }
    return () => {
      clearInterval(timer);
      for (const w of watchers) w.close();
    };
  }

  private async statusOf(serialHex: string): Promise<CertStatus> {
    const r = await this.ca.store.statusOf(serialHex);
    if (!r) return { status: 'unknown' };
    if (r.status === 'revoked')
      return { status: 'revoked', at: r.revokedAt ?? new Date(0), reason: r.revocationReason ?? 'unspecified' };
    return { status: 'good' };
  }

  /** A responder certificate being issued: concurrent answers wait for the one, instead of issuing one each. */
  private issuing?: Promise<{ cert: Certificate; key: KeyObject }>;

  /**
   * The delegated responder certificate and key (HOME/ocsp/), issued or renewed when needed. A new one is recorded
   * in the inventory (profile 'ocsp', so `mtls ca list` shows it and `mtls revoke` can take it out) before its files
   * are written: a responder certificate the inventory does not know never signs.
   */
  async responder(now = new Date()): Promise<{ cert: Certificate; key: KeyObject }> {
    const fresh = (c: Certificate) => c.notAfter.getTime() - now.getTime() > RESPONDER_RENEW_MS;
    if (this.signer && fresh(this.signer.cert) && !(await this.signerRevoked(now))) return this.signer;
    if (this.signer) {
      this.signer = undefined;
      this.cache.clear(); // answers signed by the old certificate go with it
    }
    this.issuing ??= this.loadOrIssue(now, fresh).finally(() => (this.issuing = undefined));
    return this.issuing;
  }

  private signerCheckedAt = 0;

  /** Whether the signer in use was revoked (mtls revoke, by any process): looked up every few seconds. */
  private async signerRevoked(now: Date): Promise<boolean> {
    if (!this.signer || now.getTime() - this.signerCheckedAt < SIGNER_CHECK_MS) return false;
    this.signerCheckedAt = now.getTime();
    return (await this.ca.store.statusOf(this.signer.cert.serialHex))?.status === 'revoked';
  }

  private record(cert: Certificate, now: Date): Promise<void> {
    return this.ca.store.add({
      serial: cert.serialHex,
      profile: 'ocsp',
      subject: formatDn(cert.subject),
      issuer: formatDn(cert.issuer),
      sans: [],
      spiffeId: null,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
      fingerprint256: cert.fingerprint256,
      status: 'valid',
      issuedAt: now,
      der: cert.der,
    });
  }

  private async loadOrIssue(now: Date, fresh: (c: Certificate) => boolean): Promise<Signer> {
    const dir = path.join(this.ca.home, 'ocsp');
    const files = { cert: path.join(dir, 'responder.crt'), key: path.join(dir, 'responder.key') };
    const onDisk = readSigner(files, this.ca.intermediate);
    if (onDisk && fresh(onDisk.cert)) {
      const known = await this.ca.store.statusOf(onDisk.cert.serialHex);
      // One issued before responder certificates were recorded is recorded now; a revoked one is replaced.
      if (!known) await this.record(onDisk.cert, now);
      if (known?.status !== 'revoked') {
        this.signerCheckedAt = now.getTime();
        return (this.signer = onDisk);
      }
    }
    const s = issueResponderCertificate(
      this.ca.intermediate,
      this.ca.signingKey(),
      RESPONDER_LIFETIME_MS,
      now,
      'OCSP responder',
    );
    await this.record(s.cert, now);
    writeSigner(dir, files, s);
    return (this.signer = s);
  }
}

/** An HTTP answer of the revocation routes. */
export interface RevocationAnswer {
  status: number;
  type: string;
  body: Buffer;
  headers?: Record<string, string>;
  /** An OCSP answer: what it may be reused from (OcspAnswer). */
  ocsp?: OcspAnswer;
}

/** The request of `revocationAnswer`: `url` without the routes' prefix; `body` of a POST (at most 16 KiB). */
export interface RevocationRequest {
  method: string;
  url: string;
  ifNoneMatch?: string;
  body?: Buffer;
}

const plain = (status: number, text: string): RevocationAnswer => ({
  status,
  type: 'text/plain',
  body: Buffer.from(`${text}\n`),
});

interface ServedCrl {
  etag: string;
  modified: string;
  body: Buffer;
}

/** The CRL files each responder served last: read again only when the file is another (published since). */
const servedCrls = new WeakMap<OcspResponder, Map<string, ServedCrl>>();

/**
 * The published CRL `file` with its validator: its identity (fileIdentity) is the ETag, so two publications never
 * share one, even of the same size within one tick of the file system's clock. The octets (5 MB at 100,000
 * entries) are read once per publication, not per download: after a revocation, every polling server downloads it.
 */
function servedCrl(responder: OcspResponder, file: string): ServedCrl {
  return withIdentifiedFile(file, ({ fd, st, id }) => {
    const etag = `"${id}"`;
    let files = servedCrls.get(responder);
    const kept = files?.get(file);
    if (kept?.etag === etag) return kept;
    if (st.size > BigInt(MAX_INPUT.crl)) throw new MtlsError('BAD_INPUT', `${file} is larger than a CRL may be`);
    const served = { etag, modified: new Date(Number(st.mtimeMs)).toUTCString(), body: fs.readFileSync(fd) };
    if (!files) servedCrls.set(responder, (files = new Map()));
    files.set(file, served);
    return served;
  });
}

/**
 * The answer of the revocation routes: OCSP (POST of application/ocsp-request to /ocsp, or RFC 5019 GET
 * /ocsp/<base64>) and the published CRLs (GET /crl/intermediate.crl, /crl/root.crl). Undefined for any other
 * request. `rootPost`: a POST to / is OCSP too (`mtls ca ocsp`, where the responder has the whole server).
 */
export async function revocationAnswer(
  responder: OcspResponder,
  home: string,
  req: RevocationRequest,
  rootPost = true,
): Promise<RevocationAnswer | undefined> {
  const crl = crlPaths(home);
  const file = { '/crl/intermediate.crl': crl.intermediate, '/crl/root.crl': crl.root }[req.url];
  if (req.method === 'GET' && file) {
    let served: ServedCrl;
    try {
      served = servedCrl(responder, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return plain(404, 'no CRL published yet: run mtls ca crl');
      throw err;
    }
    // A validator, so that servers polling the CRL (--crl-url) get a 304 while it has not changed.
    const headers = { etag: served.etag, 'last-modified': served.modified, 'cache-control': 'no-cache' };
    if (req.ifNoneMatch === served.etag)
      return { status: 304, type: 'application/pkix-crl', body: Buffer.alloc(0), headers };
    return { status: 200, type: 'application/pkix-crl', body: served.body, headers };
  }
  let der: Buffer;
  if (req.method === 'GET' && req.url.startsWith('/ocsp/')) {
    try {
      der = Buffer.from(decodeURIComponent(req.url.slice('/ocsp/'.length)), 'base64');
    } catch {
      return { status: 200, type: 'application/ocsp-response', body: ocspFailure('malformedRequest') };
    }
  } else if (req.method === 'POST' && (req.url === '/ocsp' || (req.url === '/' && rootPost))) {
    if ((req.body?.length ?? 0) > MAX_REQUEST_BYTES) return plain(413, 'an OCSP request is at most 16 KiB');
    der = req.body ?? Buffer.alloc(0);
  } else return undefined;
  const ocsp = await responder.answerFor(der);
  return { status: 200, type: 'application/ocsp-response', body: ocsp.der, ocsp };
}

/**
 * The revocation routes of an HTTP server (revocationAnswer) under `prefix`; returns false for any other request.
 * Bounded: 16 KiB requests.
 */
export function revocationRoutes(
  responder: OcspResponder,
  home: string,
  onError: (m: string) => void,
  prefix = '',
): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  return (req, res) => {
    const full = req.url ?? '/';
    if (!full.startsWith(prefix)) return false;
    const url = full.slice(prefix.length) || '/';
    const ask = { method: req.method ?? 'GET', url, ifNoneMatch: req.headers['if-none-match'] };
    // Routes only: a request that is not one of ours is left to the caller before its body is read.
    if (!(
      (ask.method === 'GET' && (url.startsWith('/crl/') || url.startsWith('/ocsp/'))) ||
      (ask.method === 'POST' && (url === '/ocsp' || (url === '/' && prefix === '')))
    ))
      return false;
    const send = (a: RevocationAnswer) => {
      res.writeHead(a.status, { 'content-type': a.type, 'content-length': a.body.length, ...a.headers });
      res.end(a.body);
    };
    const answer = (body?: Buffer) =>
      revocationAnswer(responder, home, { ...ask, ...(body ? { body } : {}) }, prefix === '')
        .then((a) => send(a ?? plain(404, 'not found')))
        .catch((err) => {
          onError(messageOf(err));
          send(plain(500, 'internal error'));
        });
    if (ask.method === 'GET') {
      void answer();
      return true;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (d: Buffer) => {
      size += d.length;
      if (size > MAX_REQUEST_BYTES) {
        res.setHeader('connection', 'close');
        send(plain(413, 'an OCSP request is at most 16 KiB'));
        req.destroy();
        return;
      }
      chunks.push(d);
    });
    req.on('end', () => {
      if (size <= MAX_REQUEST_BYTES) void answer(Buffer.concat(chunks));
    });
    return true;
  };
}
