import { MtlsError } from '../errors.js';
import { readCertificates, type Certificate } from '../pki/certificate.js';
import { ocspOutcome } from '../tls/ocsp-fetch.js';
import { exportPrivateKey } from '../pki/keys.js';
import { analyzeHandshake } from '../trace/analyze.js';
import { Capture } from '../tls/capture.js';
import { dial, DialError } from '../tls/dial.js';
import { SECURE_CIPHERS, SECURE_GROUPS } from '../tls/options.js';
import { checkOurSide, diagnoseAttempt, needsLegacyProbe } from './diagnosis.js';
import { Findings, type Attempt, type LegacyProbe, type OurSide, type RevocationSeen } from './findings.js';
import type { DoctorReport } from './codes.js';
import { httpProbe } from './http-probe.js';

export {
  DIAGNOSES,
  doctorExitCode,
  type DiagnosisCode,
  type Diagnosis,
  type DoctorCheck,
  type DoctorReport,
} from './codes.js';

/** `mtls doctor`'s sockets: one real connection (and, when the server refused our offer, a legacy probe). */
export interface DoctorOptions extends OurSide {
  /** PEM trust bundle for the server. */
  ca: string | Buffer;
  /** How long to wait after our handshake for the server's verdict on our certificate. Default 400 ms. */
  confirmMs?: number;
  /** Send `HEAD /` after the handshake to read the server's clock from its Date header. Default true. */
  http?: boolean;
  /** The time to check against; the clock by default. */
  now?: Date;
}

/** Names the cause of a failing (or healthy) mTLS connection to HOST:PORT, with the checks that led there. */
export async function doctor(o: DoctorOptions): Promise<DoctorReport> {
  const now = o.now ?? new Date();
  const f = new Findings(`${o.host}:${o.port}`);
  const trust = readCertificates(Buffer.from(o.ca), 'CA bundle');
  if ((o.cert === undefined) !== (o.key === undefined))
    throw new MtlsError('USAGE', 'give both --cert and --key, or neither');
  const [ourLeaf, ourIssuer] = o.cert !== undefined ? readCertificates(Buffer.from(o.cert), 'our certificate') : [];
  const ourRevocation = await revocationOf(ourLeaf, ourIssuer, undefined, now);
  const ours = checkOurSide(o, f, now, ourRevocation);
  if (ours.stop) return f.report(ours.stop);
  const a = await attempt(o, ours.leaf !== undefined, now);
  const legacy = needsLegacyProbe(a) ? await probeLegacy(o) : undefined;
  return diagnoseAttempt(o, trust, f, ours, a, legacy, now);
}

/** One real connection through the byte tap, with verification left to us (doctor judges the chain itself). */
async function attempt(o: DoctorOptions, withCert: boolean, now: Date): Promise<Attempt> {
  const capture = new Capture();
  const a: Omit<Attempt, 'view' | 'firstServerBytes'> = { chain: [], closedAfterHandshake: false };
  const servername = o.servername ?? o.host;
  const key = typeof o.key === 'object' && !Buffer.isBuffer(o.key) ? exportPrivateKey(o.key) : o.key;
  let staple: Buffer | undefined;
  try {
    const d = await dial({
      host: o.host,
      port: o.port,
      servername,
      verify: 'observe',
      timeoutMs: o.timeoutMs ?? 5000,
      confirmMs: o.confirmMs ?? 400,
      capture,
      onSecure: (_socket, _chain, stapled) => {
        staple = stapled;
        return undefined;
      },
      tls: {
        requestOCSP: true,
        ca: Buffer.from(o.ca).toString(),
        minVersion: 'TLSv1.2',
        ciphers: SECURE_CIPHERS,
        ecdhCurve: SECURE_GROUPS,
        ...(withCert
          ? {
              cert: Buffer.from(o.cert as string | Buffer).toString(),
              key: key!,
              ...(o.passphrase ? { passphrase: o.passphrase } : {}),
            }
          : {}),
      },
    });
    a.chain = d.chain;
    a.protocol = d.socket.getProtocol() ?? undefined;
    a.cipher = d.socket.getCipher()?.standardName;
    if (o.http !== false) {
      const h = await httpProbe(d.socket, servername);
      if (h.answer) a.http = h.answer;
      else if (h.closed) {
        a.closedAfterHandshake = true;
        if (h.error) a.error ??= h.error;
      }
    }
    d.socket.destroy();
  } catch (err) {
    const e = err instanceof DialError ? err : new DialError(err, false, false, [], undefined, undefined);
    a.error = e.cause as NodeJS.ErrnoException;
    a.chain = e.chain;
    if (e.handshook) {
      a.closedAfterHandshake = true;
      a.protocol = e.protocol;
      a.cipher = e.cipher;
    }
  }
  const serverRevocation = await revocationOf(a.chain[0], a.chain[1], staple, now);
  return {
    ...a,
    ...(serverRevocation ? { serverRevocation } : {}),
    view: analyzeHandshake(capture.clientBytes, capture.serverBytes, capture.keylog),
    firstServerBytes: capture.serverBytes.subarray(0, 64),
  };
}

/** Asks what the server does speak when it refused our offer: TLS 1.0+ and any cipher, no verification. */
async function probeLegacy(o: DoctorOptions): Promise<LegacyProbe> {
  try {
    const d = await dial({
      host: o.host,
      port: o.port,
      servername: o.servername ?? o.host,
      verify: 'observe',
      timeoutMs: o.timeoutMs ?? 5000,
      tls: { minVersion: 'TLSv1', ciphers: 'ALL:@SECLEVEL=0' },
    });
    const r = {
      protocol: d.socket.getProtocol() ?? '?',
      cipher: d.socket.getCipher().standardName ?? d.socket.getCipher().name,
    };
    d.socket.destroy();
    return r;
  } catch {
    return undefined;
  }
}

/**
 * The revocation status of `leaf` (issued by `issuer`): from the server's staple when there is one, else from the
 * OCSP responder the certificate names (3 s at most); undefined when it names none (not checked).
 */
async function revocationOf(
  leaf: Certificate | undefined,
  issuer: Certificate | undefined,
  staple: Buffer | undefined,
  now: Date,
): Promise<RevocationSeen | undefined> {
  if (!leaf || !issuer) return undefined;
  const o = await ocspOutcome(leaf, issuer, { ...(staple ? { staple } : {}), now });
  if (!o) return undefined;
  if ('failed' in o) return { status: 'failed', source: o.source, why: o.failed };
  const s = o.status;
  return {
    status: s.status,
    source: `${o.source}, signed by ${s.signedBy}`,
    ...(s.revokedAt ? { revokedAt: s.revokedAt } : {}),
    ...(s.reason ? { reason: s.reason } : {}),
  };
}
