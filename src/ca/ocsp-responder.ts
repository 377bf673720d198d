import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { messageOf } from '../errors.js';
import { stageFiles } from '../io/files.js';
import { listenOn } from '../io/listen.js';
import type { Address } from '../io/address.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import {
  authorityKeyIdExt,
  basicConstraintsExt,
  extKeyUsageExt,
  keyIdentifier,
  keyUsageExt,
  subjectKeyIdExt,
} from '../pki/extensions.js';
import { exportPrivateKey, generateKeyPair, loadPrivateKey } from '../pki/keys.js';
import { buildName, formatDn } from '../pki/names.js';
import {
  certIdIsFor,
  encodeOcspResponse,
  ocspFailure,
  parseOcspRequest,
  type CertStatus,
  type SingleAnswer,
} from '../pki/ocsp.js';
import { OID } from '../pki/oid.js';
import { decodeCertificatesPem, encodePem } from '../pki/pem.js';
import { randomSerial, signCertificate, wholeSeconds } from '../pki/signing.js';
import type { CertificateStore } from '../store/store.js';
import { crlPaths } from './revocation.js';
import { DAY } from './init.js';

/** What the responder needs of the CA (CertificateAuthority provides it). */
export interface OcspCa {
  home: string;
  intermediate: Certificate;
  store: CertificateStore;
  signingKey(): KeyObject;
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
  private signer?: { cert: Certificate; key: KeyObject };
  private readonly cache = new Map<string, { der: Buffer; until: number }>();

  constructor(private readonly ca: OcspCa) {}

  /** The DER OCSPResponse for a DER OCSPRequest: never throws (malformedRequest, unauthorized, internalError). */
  async answer(request: Buffer, now = new Date()): Promise<Buffer> {
    let parsed;
    try {
      parsed = parseOcspRequest(request);
    } catch {
      return ocspFailure('malformedRequest');
    }
    try {
      if (!parsed.certIds.every((id) => certIdIsFor(id, this.ca.intermediate))) return ocspFailure('unauthorized');
      const answers: SingleAnswer[] = [];
      for (const certId of parsed.certIds) answers.push({ certId, status: await this.statusOf(certId.serialHex) });
      const key = parsed.nonce
        ? undefined
        : answers.map((a) => `${a.certId.der.toString('hex')}:${JSON.stringify(a.status)}`).join();
      // First the signer: a new one (renewed, or the old one revoked) empties the cache of the old one's answers.
      const signer = await this.responder(now);
      const cached = key ? this.cache.get(key) : undefined;
      if (cached && cached.until > now.getTime()) return cached.der;
      const der = encodeOcspResponse(answers, {
        signer: signer.cert,
        key: signer.key,
        producedAt: now,
        thisUpdate: now,
        nextUpdate: new Date(now.getTime() + ANSWER_LIFETIME_MS),
        ...(parsed.nonce ? { nonce: parsed.nonce } : {}),
      });
      if (key) {
        if (this.cache.size >= MAX_CACHED) this.cache.clear();
        this.cache.set(key, { der, until: now.getTime() + ANSWER_LIFETIME_MS / 2 });
      }
      return der;
    } catch {
      return ocspFailure('internalError');
    }
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

  private async loadOrIssue(
    now: Date,
    fresh: (c: Certificate) => boolean,
  ): Promise<{ cert: Certificate; key: KeyObject }> {
    const dir = path.join(this.ca.home, 'ocsp');
    const certFile = path.join(dir, 'responder.crt');
    const keyFile = path.join(dir, 'responder.key');
    try {
      const cert = parseCertificate(decodeCertificatesPem(fs.readFileSync(certFile, 'latin1'), certFile)[0]!);
      if (fresh(cert) && cert.issuerDer.equals(this.ca.intermediate.subjectDer)) {
        const key = loadPrivateKey(fs.readFileSync(keyFile), keyFile);
        const known = await this.ca.store.statusOf(cert.serialHex);
        // One issued before responder certificates were recorded is recorded now; a revoked one is replaced.
        if (!known) await this.record(cert, now);
        if (known?.status !== 'revoked') {
          this.signerCheckedAt = now.getTime();
          return (this.signer = { cert, key });
        }
      }
    } catch {
      // none yet, or unreadable: issue a new one
    }
    const { privateKey, publicKey } = generateKeyPair('ec-p256');
    const start = wholeSeconds(now);
    const der = signCertificate(
      {
        serial: randomSerial(),
        issuer: this.ca.intermediate.subjectDer,
        subject: buildName([{ oid: OID.commonName, value: 'OCSP responder' }]),
        notBefore: new Date(start.getTime() - 5 * 60e3),
        notAfter: new Date(Math.min(start.getTime() + RESPONDER_LIFETIME_MS, this.ca.intermediate.notAfter.getTime())),
        publicKey,
        extensions: [
          basicConstraintsExt(false),
          keyUsageExt(['digitalSignature']),
          extKeyUsageExt([OID.ocspSigning]),
          // id-pkix-ocsp-nocheck (RFC 6960 4.2.2.2.1): clients do not ask for the responder's own status.
          { oid: '1.3.6.1.5.5.7.48.1.5', critical: false, value: Buffer.from([0x05, 0x00]) },
          subjectKeyIdExt(keyIdentifier(publicKey)),
          authorityKeyIdExt(this.ca.intermediate.subjectKeyId ?? keyIdentifier(this.ca.intermediate.publicKey!)),
        ],
      },
      this.ca.signingKey(),
    );
    const cert = parseCertificate(der);
    await this.record(cert, now);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    stageFiles(
      [
        { path: keyFile, data: exportPrivateKey(privateKey), mode: 0o600 },
        { path: certFile, data: encodePem('CERTIFICATE', der), mode: 0o644 },
      ],
      { overwrite: true },
    ).commit();
    return (this.signer = { cert, key: privateKey });
  }
}

/**
 * The revocation routes of an HTTP server: OCSP (POST of application/ocsp-request to PREFIX/ocsp, or RFC 5019
 * GET PREFIX/ocsp/<base64>) and the published CRLs (GET PREFIX/crl/intermediate.crl, PREFIX/crl/root.crl).
 * Returns false for any other request. Bounded: 16 KiB requests.
 */
export function revocationRoutes(
  responder: OcspResponder,
  home: string,
  onError: (m: string) => void,
  prefix = '',
): (req: http.IncomingMessage, res: http.ServerResponse) => boolean {
  const crl = crlPaths(home);
  return (req, res) => {
    const send = (status: number, type: string, body: Buffer, extra: Record<string, string> = {}) => {
      res.writeHead(status, { 'content-type': type, 'content-length': body.length, ...extra });
      res.end(body);
    };
    const full = req.url ?? '/';
    if (!full.startsWith(prefix)) return false;
    const url = full.slice(prefix.length) || '/';
    const file = { '/crl/intermediate.crl': crl.intermediate, '/crl/root.crl': crl.root }[url];
    if (req.method === 'GET' && file) {
      try {
        // A validator, so that servers polling the CRL (--crl-url) get a 304 while it has not changed.
        const st = fs.statSync(file);
        const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
        const validators = { etag, 'last-modified': st.mtime.toUTCString(), 'cache-control': 'no-cache' };
        if (req.headers['if-none-match'] === etag) {
          res.writeHead(304, validators);
          res.end();
        } else send(200, 'application/pkix-crl', fs.readFileSync(file), validators);
      } catch {
        send(404, 'text/plain', Buffer.from('no CRL published yet: run mtls ca crl\n'));
      }
      return true;
    }
    const ocspResponse = (der: Buffer) =>
      responder
        .answer(der)
        .then((r) => send(200, 'application/ocsp-response', r))
        .catch((err) => {
          onError(messageOf(err));
          send(500, 'text/plain', Buffer.from('internal error\n'));
        });
    if (req.method === 'GET' && url.startsWith('/ocsp/')) {
      let der: Buffer;
      try {
        der = Buffer.from(decodeURIComponent(url.slice('/ocsp/'.length)), 'base64');
      } catch {
        send(200, 'application/ocsp-response', ocspFailure('malformedRequest'));
        return true;
      }
      void ocspResponse(der);
      return true;
    }
    if (req.method === 'POST' && (url === '/ocsp' || (url === '/' && prefix === ''))) {
      const chunks: Buffer[] = [];
      let size = 0;
      req.on('data', (d: Buffer) => {
        size += d.length;
        if (size > MAX_REQUEST_BYTES) {
          send(413, 'text/plain', Buffer.from('an OCSP request is at most 16 KiB\n'), { connection: 'close' });
          req.destroy();
          return;
        }
        chunks.push(d);
      });
      req.on('end', () => {
        if (size <= MAX_REQUEST_BYTES) void ocspResponse(Buffer.concat(chunks));
      });
      return true;
    }
    return false;
  };
}

/**
 * `mtls ca ocsp`: the revocation routes (revocationRoutes), the URLs `ca init --url` puts in certificates.
 * Bounded: 16 KiB requests, 10 s to send one.
 */
export async function serveOcsp(responder: OcspResponder, home: string, at: Address, onError: (m: string) => void) {
  const routes = revocationRoutes(responder, home, onError);
  const server = http.createServer((req, res) => {
    if (routes(req, res)) return;
    const body = Buffer.from('POST /ocsp, GET /ocsp/<base64>, GET /crl/intermediate.crl or /crl/root.crl\n');
    res.writeHead(404, { 'content-type': 'text/plain', 'content-length': body.length });
    res.end(body);
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.on('clientError', (_err, socket) => socket.destroy());
  await listenOn(server, at, 'the OCSP responder');
  return server;
}
