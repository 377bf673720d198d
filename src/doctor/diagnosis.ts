import type { KeyObject } from 'node:crypto';
import { exitCodeFor, type MtlsErrorCode } from '../errors.js';
import { parseCertificate, readCertificates, type Certificate } from '../pki/certificate.js';
import { keysMatch, loadPrivateKey } from '../pki/keys.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn, hostCheck } from '../pki/names.js';
import { OID } from '../pki/oid.js';
import { certLabel, verifyChain, type VerifyProblem } from '../pki/verify.js';
import { relativeTime } from '../text/duration.js';
import type { HandshakeView } from '../trace/analyze.js';

/**
 * The pure half of `mtls doctor`: from what one connection showed (an Attempt) to a diagnosis, no sockets. The
 * sockets are in doctor.ts.
 */

/**
 * What `mtls doctor` can conclude, one code per cause (each with its own fix), and the error code each stands for:
 * that code's family gives the exit status (src/errors.ts). OK stands for none.
 */
export const DIAGNOSES = {
  OK: null,
  KEY_MISMATCH: 'KEY_MISMATCH',
  UNREACHABLE: 'UNREACHABLE',
  NOT_TLS: 'NOT_TLS',
  NO_COMMON_VERSION: 'HANDSHAKE_FAILED',
  NO_COMMON_CIPHER: 'HANDSHAKE_FAILED',
  HANDSHAKE_FAILED: 'HANDSHAKE_FAILED',
  SERVER_CHAIN_INCOMPLETE: 'CERT_UNTRUSTED',
  SERVER_UNTRUSTED: 'CERT_UNTRUSTED',
  SERVER_CERT_EXPIRED: 'CERT_EXPIRED',
  SERVER_WRONG_NAME: 'SERVER_IDENTITY_MISMATCH',
  SERVER_CERT_INVALID: 'CERT_INVALID',
  CLOCK_SKEW: 'CERT_NOT_YET_VALID',
  CLIENT_CERT_REQUIRED: 'PEER_REQUIRES_CERT',
  OUR_CERT_NOT_CLIENT: 'PEER_REJECTED_OUR_CERT',
  OUR_CERT_EXPIRED: 'PEER_REJECTED_OUR_CERT',
  OUR_CA_UNKNOWN: 'PEER_REJECTED_OUR_CERT',
  OUR_CERT_REVOKED: 'PEER_REJECTED_OUR_CERT',
  OUR_CERT_REJECTED: 'PEER_REJECTED_OUR_CERT',
  NOT_AUTHORIZED: 'NOT_AUTHORIZED',
} as const satisfies Record<string, MtlsErrorCode | null>;
export type DiagnosisCode = keyof typeof DIAGNOSES;

export interface DoctorCheck {
  name: string;
  /** true passed, false failed, null could not be checked. */
  ok: boolean | null;
  detail: string;
}

export interface Diagnosis {
  code: DiagnosisCode;
  /** What is wrong, in one sentence. */
  cause: string;
  /** What to do about it, in one sentence. */
  fix: string;
}

export interface DoctorReport {
  target: string;
  ok: boolean;
  diagnosis: Diagnosis;
  /** Every check that ran, in order. */
  checks: DoctorCheck[];
  protocol?: string;
  cipherSuite?: string;
}

/** What the diagnosis needs to know about the caller's side (doctor's options but the sockets' own). */
export interface OurSide {
  host: string;
  port: number;
  /** Our client chain and key (PEM); omit both to connect without a certificate. */
  cert?: string | Buffer;
  key?: string | Buffer | KeyObject;
  passphrase?: string;
  servername?: string;
  /** Expect this SPIFFE ID (pattern) instead of the host name. */
  spiffeId?: string;
  /** Per-connection deadline. Default 5 s. */
  timeoutMs?: number;
  /** Clock skew above this is reported. Default 60 s. */
  maxSkewMs?: number;
}

/** What one real connection showed. */
export interface Attempt {
  error?: NodeJS.ErrnoException;
  chain: Certificate[];
  protocol?: string;
  cipher?: string;
  /** The server closed (or reset) the connection within the confirm window after our handshake. */
  closedAfterHandshake: boolean;
  httpDate?: Date;
  httpStatus?: string;
  view: HandshakeView;
  firstServerBytes: Buffer;
}

/** What the server speaks when it refused our offer (TLS 1.0+, any cipher), or undefined when it refused that too. */
export type LegacyProbe = { protocol: string; cipher: string } | undefined;

const diag = (code: DiagnosisCode, cause: string, fix: string): Diagnosis => ({ code, cause, fix });

/** The doctor's running record: the checks so far and how a report is made from them. */
export class Findings {
  readonly checks: DoctorCheck[] = [];
  constructor(readonly target: string) {}

  check(name: string, ok: boolean | null, detail: string): boolean | null {
    this.checks.push({ name, ok, detail });
    return ok;
  }

  report(d: Diagnosis, a?: Attempt): DoctorReport {
    return {
      target: this.target, ok: d.code === 'OK', diagnosis: d, checks: this.checks,
      ...(a?.protocol ? { protocol: a.protocol } : {}), ...(a?.cipher ? { cipherSuite: a.cipher } : {}),
    };
  }
}

/** Step 1, before any packet: a mismatched key or a wrong certificate is ours to fix. */
export function checkOurSide(o: OurSide, f: Findings, now: Date): { leaf?: Certificate; problem?: Diagnosis; stop?: Diagnosis } {
  const ours = o.cert !== undefined ? readOurs(o.cert) : [];
  const leaf = ours[0];
  if (!leaf || o.key === undefined) return {};
  let problem: Diagnosis | undefined;
  const key = typeof o.key === 'object' && !Buffer.isBuffer(o.key) ? o.key : loadPrivateKey(o.key, 'our key', o.passphrase);
  if (!f.check('our key matches our certificate', !!leaf.publicKey && keysMatch(key, leaf.publicKey), `'${certLabel(leaf)}'`)) {
    return { leaf, stop: diag('KEY_MISMATCH', `our key does not belong to our certificate '${certLabel(leaf)}'`, 'pass the key that was generated with this certificate (mtls inspect CERT --key KEY shows whether a pair matches)') };
  }
  const clientAuth = !leaf.extKeyUsage || leaf.extKeyUsage.includes(OID.clientAuth);
  if (!f.check('our certificate is for client authentication', clientAuth, clientAuth ? 'EKU allows clientAuth' : `EKU is ${leaf.extKeyUsage!.join(', ')} without clientAuth`)) {
    problem = diag('OUR_CERT_NOT_CLIENT', `our certificate '${certLabel(leaf)}' is not a client certificate (its extended key usage lacks clientAuth)`, 'issue a client certificate: mtls issue client NAME (or mtls issue spiffe)');
  }
  const expired = now > leaf.notAfter;
  const early = now < leaf.notBefore;
  f.check('our certificate is valid now', !expired && !early, expired ? `expired ${relativeTime(leaf.notAfter, now)}` : early ? `valid only ${relativeTime(leaf.notBefore, now)}` : `until ${leaf.notAfter.toISOString()}`);
  if (expired) problem = diag('OUR_CERT_EXPIRED', `our certificate '${certLabel(leaf)}' expired ${relativeTime(leaf.notAfter, now)}`, 'renew it: mtls issue client NAME (or set up automatic renewal)');
  return { leaf, ...(problem ? { problem } : {}) };
}

const readOurs = (cert: string | Buffer) => readCertificates(Buffer.from(cert), 'our certificate');

const UNREACHABLE_CODES = ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'];

/** Whether the attempt ended before a ServerHello for want of a common version or cipher (then probe what it speaks). */
export function needsLegacyProbe(a: Attempt): boolean {
  if (a.view.serverHello || !reachedTls(a)) return false;
  const alert = a.view.serverAlerts[0]?.name;
  const code = a.error?.code ?? '';
  return alert === 'protocol_version' || alert === 'handshake_failure' || alert === 'insufficient_security' || /VERSION|NO_(SHARED|SUITABLE)_CIPHER|HANDSHAKE_FAILURE/.test(code);
}

function reachedTls(a: Attempt): boolean {
  const code = a.error?.code ?? '';
  if (UNREACHABLE_CODES.includes(code)) return false;
  if (code === 'ETIMEDOUT' && a.firstServerBytes.length === 0 && !a.view.clientHello) return false;
  const first = a.firstServerBytes;
  return !(first.length > 0 && (first[0]! < 20 || first[0]! > 23));
}

/** Steps 2 to 5: the connection, the server's chain, the server's verdict on us, the clocks. */
export function diagnoseAttempt(
  o: OurSide, trust: Certificate[], f: Findings, ours: { leaf?: Certificate; problem?: Diagnosis }, a: Attempt, legacy: LegacyProbe, now: Date,
): DoctorReport {
  const target = f.target;
  const { leaf } = ours;
  const code = a.error?.code ?? '';
  if (UNREACHABLE_CODES.includes(code) || (code === 'ETIMEDOUT' && a.firstServerBytes.length === 0 && !a.view.clientHello)) {
    f.check('TCP connection', false, `${code}`);
    const why: Record<string, string> = { ECONNREFUSED: 'nothing listens on that port', ENOTFOUND: 'the host name does not resolve', EAI_AGAIN: 'the host name does not resolve (DNS not answering)', ETIMEDOUT: 'no answer to the TCP connection (a firewall dropping packets, or the wrong host)' };
    return f.report(diag('UNREACHABLE', `${target} is not reachable: ${why[code] ?? code}`, 'check the host and port, and that the service is running and listening on that interface'));
  }
  f.check('TCP connection', true, 'connected');
  const first = a.firstServerBytes;
  if (first.length > 0 && (first[0]! < 20 || first[0]! > 23)) {
    f.check('the server speaks TLS', false, `it answered ${JSON.stringify(first.subarray(0, 40).toString('latin1'))}`);
    return f.report(diag('NOT_TLS', `${target} does not speak TLS: it answered ${JSON.stringify(first.subarray(0, 24).toString('latin1'))}`, 'use the TLS port of the service, or put mTLS in front of it (mtls proxy server)'));
  }
  if (!a.view.serverHello) {
    const alert = a.view.serverAlerts[0]?.name;
    if (needsLegacyProbe(a)) {
      const p = legacy;
      f.check('a common TLS version and cipher suite', false, p ? `the server picks ${p.protocol} with ${p.cipher}` : `the server refused every offer (${alert ?? code})`);
      if (p && (p.protocol === 'TLSv1' || p.protocol === 'TLSv1.1' || p.protocol === 'SSLv3')) {
        return f.report(diag('NO_COMMON_VERSION', `the server only speaks ${p.protocol}; we require TLS 1.2 or newer`, 'enable TLS 1.2 and 1.3 on the server (e.g. nginx ssl_protocols TLSv1.2 TLSv1.3)'), a);
      }
      if (p) return f.report(diag('NO_COMMON_CIPHER', `the server chose ${p.protocol} with ${p.cipher}, which we do not allow (we require ECDHE key exchange with an AEAD cipher)`, 'enable ECDHE-ECDSA-AES128-GCM-SHA256 (or another ECDHE+GCM/ChaCha20 suite) on the server'), a);
      return f.report(diag('NO_COMMON_CIPHER', `the server accepts none of our TLS versions, cipher suites or groups (alert ${alert ?? code})`, 'enable TLS 1.2+ with an ECDHE+AEAD suite and the X25519 or P-256 group on the server'), a);
    }
    if (first.length === 0) {
      const what = code === 'ETIMEDOUT' ? `accepted the connection but sent nothing within ${o.timeoutMs ?? 5000} ms` : 'closed the connection without a TLS answer';
      f.check('the server speaks TLS', false, `it ${what}`);
      return f.report(diag('NOT_TLS', `${target} ${what}`, 'check that this port serves TLS (and not, e.g., a plaintext protocol that waits for the client to speak first)'), a);
    }
    return f.report(diag('HANDSHAKE_FAILED', `the handshake failed before the server chose its parameters (${alert ?? a.error?.message ?? 'no ServerHello'})`, 'run mtls trace for the full exchange'), a);
  }
  f.check('the server speaks TLS', true, `${a.protocol ?? 'TLS'}${a.cipher ? `, ${a.cipher}` : ''}`);

  // 3. The server's chain, by our own path validation.
  const chain = a.chain.length ? a.chain : (a.view.serverCertificates ?? []).map((d) => parseCertificate(d, 'server certificate'));
  let serverProblem: Diagnosis | undefined;
  if (chain.length) {
    const name = (o.servername ?? o.host).replace(/^\[|\]$/g, '');
    const r = verifyChain(chain[0]!, { trustAnchors: trust, intermediates: chain.slice(1), at: now, purpose: 'server', ...(o.spiffeId ? { spiffeId: o.spiffeId } : hostCheck(name)) });
    f.check("the server's chain is trusted, valid now and for this name", r.valid, r.valid ? `'${certLabel(chain[0]!)}'` : r.problems.map((p) => p.message).join('; '));
    if (!r.valid) serverProblem = serverDiagnosis(r.problems, chain, trust, name, now);
  } else {
    f.check("the server's chain", null, 'not seen (resumed session or handshake cut short)');
  }

  // 4. What the server made of us.
  const asked = a.view.certificateRequest !== undefined;
  f.check('the server asks for a client certificate', asked ? true : null, asked ? `acceptable CAs: ${a.view.certificateRequest!.certificateAuthorities.length || 'any'}` : 'no CertificateRequest seen');
  const alert = a.view.serverAlerts.find((x) => x.description !== 0);
  const rejected = alert !== undefined || (a.error !== undefined) || a.closedAfterHandshake;
  let verdict: Diagnosis | undefined;
  if (rejected && !serverProblem) {
    verdict = theirVerdict(alert?.name ?? alertFromCode(code), leaf !== undefined, asked, ours.problem);
    f.check('the server accepts us', false, alert ? `alert ${alert.name}` : a.closedAfterHandshake ? 'it closed the connection right after our handshake' : (a.error?.message ?? ''));
  } else if (!rejected) {
    f.check('the server accepts us', true, leaf ? `with '${certLabel(leaf)}'` : 'without a client certificate');
  }

  // 5. The clocks.
  let skew: Diagnosis | undefined;
  if (a.httpDate) {
    const d = a.httpDate.getTime() - now.getTime();
    const ok = Math.abs(d) <= (o.maxSkewMs ?? 60_000) + 1000;
    f.check("the server's clock agrees with ours", ok, `its Date header says ${a.httpDate.toISOString()}, ${Math.round(Math.abs(d) / 1000)} s ${d > 0 ? 'ahead' : 'behind'}`);
    if (!ok) skew = diag('CLOCK_SKEW', `the server's clock is ${Math.round(Math.abs(d) / 1000)} s ${d > 0 ? 'ahead of' : 'behind'} ours (its HTTP Date: ${a.httpDate.toISOString()})`, 'run NTP on both machines; certificates that are valid on one clock look expired or not yet valid on the other');
  }
  if (a.httpStatus) f.check('HTTP response', null, a.httpStatus);

  const d = serverProblem ?? verdict ?? skew ?? ours.problem;
  if (d) return f.report(d, a);
  return f.report(diag('OK', `mutual TLS works: ${a.protocol}, ${a.cipher}${leaf ? `, as '${certLabel(leaf)}'` : ''}`, 'nothing to fix'), a);
}

function serverDiagnosis(problems: VerifyProblem[], chain: Certificate[], trust: Certificate[], name: string, now: Date): Diagnosis {
  const p = problems[0]!;
  const top = chain.at(-1)!;
  switch (p.code) {
    case 'UNKNOWN_ISSUER': {
      const selfSigned = sameDn(top.issuer, top.subject);
      const issuer = formatDn(top.issuer);
      if (!selfSigned && !trust.some((t) => sameDn(t.subject, top.issuer))) {
        return chain.length === 1
          ? diag('SERVER_CHAIN_INCOMPLETE', `the server sent only its own certificate, issued by '${issuer}', which it did not send and we do not trust`, `configure the server to send its full chain (leaf + intermediates); if '${issuer}' is a root, add it to --ca`)
          : diag('SERVER_UNTRUSTED', `the server's chain ends at '${certLabel(top)}', issued by '${issuer}', which is not in our trust bundle`, `add the CA that issued it to --ca, or have the server send its missing intermediate`);
      }
      return diag('SERVER_UNTRUSTED', `the server's certificate is issued by '${selfSigned ? certLabel(top) : issuer}', which is not in our trust bundle${selfSigned ? '' : ' (a CA of that name is, but it did not sign it)'}`, 'pass the right CA bundle with --ca, or issue the server certificate from the CA we trust');
    }
    case 'EXPIRED':
      return diag('SERVER_CERT_EXPIRED', `the server's ${p.depth === 0 ? 'certificate' : 'chain'} has expired: ${p.message}`, 'renew the server certificate (and reload the server)');
    case 'NOT_YET_VALID': {
      const c = chain[p.depth]!;
      const ahead = c.notBefore.getTime() - now.getTime();
      return ahead < 7 * 86400e3
        ? diag('CLOCK_SKEW', `the server's certificate becomes valid only ${relativeTime(c.notBefore, now)}: the issuing CA's clock is ahead of ours, or ours is behind`, 'run NTP on both machines (and back-date new certificates by a few minutes)')
        : diag('SERVER_CERT_INVALID', p.message, 'issue the server a certificate that is valid now');
    }
    case 'NAME_MISMATCH':
    case 'SPIFFE_ID_MISMATCH':
      return diag('SERVER_WRONG_NAME', p.message, `connect with the name on the certificate (--servername), or reissue it with '${name}' among its SANs`);
    default:
      return diag('SERVER_CERT_INVALID', p.message, 'issue the server a certificate with the server profile from a CA we trust');
  }
}

/** The server refused us: which alert (or silence) means what, refined by what we found in our own certificate. */
function theirVerdict(alert: string | undefined, sentCert: boolean, asked: boolean, ours: Diagnosis | undefined): Diagnosis {
  if (!sentCert && (alert === 'certificate_required' || alert === 'handshake_failure' || (asked && alert === undefined))) {
    return diag('CLIENT_CERT_REQUIRED', 'the server requires a client certificate and we presented none', 'pass --cert and --key (issue one with: mtls issue client NAME)');
  }
  if (ours && alert !== 'unknown_ca' && alert !== 'certificate_revoked') return ours;
  switch (alert) {
    case 'unknown_ca':
      return diag('OUR_CA_UNKNOWN', 'the server does not trust the CA that issued our certificate (alert unknown_ca)', "add our CA certificate to the server's client-CA bundle (or get a certificate from the CA it trusts)");
    case 'certificate_expired':
      return diag('OUR_CERT_EXPIRED', 'the server says our certificate has expired (alert certificate_expired)', "renew our certificate; if it is valid by our clock, the server's clock is wrong");
    case 'certificate_revoked':
      return diag('OUR_CERT_REVOKED', 'the server says our certificate is revoked (alert certificate_revoked)', 'get a new certificate (a revoked one stays revoked)');
    case 'unsupported_certificate':
      return diag('OUR_CERT_NOT_CLIENT', 'the server refused our certificate as unsuitable (alert unsupported_certificate): usually a missing clientAuth EKU', 'issue a client certificate: mtls issue client NAME');
    case 'access_denied':
      return diag('NOT_AUTHORIZED', 'the server verified our certificate but does not allow our identity (alert access_denied)', "ask the server's owner for an allow rule for our identity");
    case undefined:
      return diag('NOT_AUTHORIZED', 'the server closed the connection right after verifying our certificate: it trusts the chain but its policy does not allow our identity (or it rejects the certificate silently)', "ask the server's owner for an allow rule for our identity (mtls inspect shows it); the server's log names the reason");
    default:
      return diag('OUR_CERT_REJECTED', `the server rejected our certificate (alert ${alert})`, "check the server's log; mtls trace shows the exchange");
  }
}

function alertFromCode(code: string): string | undefined {
  const m = /ALERT_([A-Z_]+)$/.exec(code);
  return m ? m[1]!.toLowerCase() : undefined;
}

/** Exit status for a diagnosis, on the CLI's scale: 0 healthy, else its error code's (src/errors.ts). */
export function doctorExitCode(code: DiagnosisCode): number {
  const e = DIAGNOSES[code];
  return e === null ? 0 : exitCodeFor(e);
}
