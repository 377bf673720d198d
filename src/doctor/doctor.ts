import type { KeyObject } from 'node:crypto';
import tls from 'node:tls';
import { MtlsError } from '../errors.js';
import { parseCertificate, readCertificates, type Certificate } from '../pki/certificate.js';
import { exportPrivateKey, keysMatch, loadPrivateKey } from '../pki/keys.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn, hostCheck, isIpLiteral } from '../pki/names.js';
import { OID } from '../pki/oid.js';
import { certLabel, verifyChain, type VerifyProblem } from '../pki/verify.js';
import { analyzeHandshake, type HandshakeView } from '../trace/analyze.js';
import { Capture, tappedSocket } from '../trace/capture.js';
import { peerChain } from '../tls/client.js';
import { SECURE_CIPHERS, SECURE_GROUPS } from '../tls/options.js';
import { relativeTime } from '../util/duration.js';

/** What `mtls doctor` can conclude; one code per cause, each with its own fix. */
export type DiagnosisCode =
  | 'OK' | 'KEY_MISMATCH' | 'UNREACHABLE' | 'NOT_TLS' | 'NO_COMMON_VERSION' | 'NO_COMMON_CIPHER' | 'HANDSHAKE_FAILED'
  | 'SERVER_CHAIN_INCOMPLETE' | 'SERVER_UNTRUSTED' | 'SERVER_CERT_EXPIRED' | 'SERVER_WRONG_NAME' | 'SERVER_CERT_INVALID'
  | 'CLIENT_CERT_REQUIRED' | 'OUR_CERT_NOT_CLIENT' | 'OUR_CERT_EXPIRED' | 'OUR_CA_UNKNOWN' | 'OUR_CERT_REVOKED'
  | 'NOT_AUTHORIZED' | 'OUR_CERT_REJECTED' | 'CLOCK_SKEW';

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

export interface DoctorOptions {
  host: string;
  port: number;
  /** PEM trust bundle for the server. */
  ca: string | Buffer;
  /** Our client chain and key (PEM); omit both to connect without a certificate. */
  cert?: string | Buffer;
  key?: string | Buffer | KeyObject;
  passphrase?: string;
  servername?: string;
  /** Expect this SPIFFE ID (pattern) instead of the host name. */
  spiffeId?: string;
  /** Per-connection deadline. Default 5 s. */
  timeoutMs?: number;
  /** How long to wait after our handshake for the server's verdict on our certificate. Default 400 ms. */
  confirmMs?: number;
  /** Send `HEAD /` after the handshake to read the server's clock from its Date header. Default true. */
  http?: boolean;
  /** Clock skew above this is reported. Default 60 s. */
  maxSkewMs?: number;
  /** The time to check against; the clock by default. */
  now?: Date;
}

interface Attempt {
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

const diag = (code: DiagnosisCode, cause: string, fix: string): Diagnosis => ({ code, cause, fix });

/** Names the cause of a failing (or healthy) mTLS connection to HOST:PORT, with the checks that led there. */
export async function doctor(o: DoctorOptions): Promise<DoctorReport> {
  const target = `${o.host}:${o.port}`;
  const now = o.now ?? new Date();
  const checks: DoctorCheck[] = [];
  const check = (name: string, ok: boolean | null, detail: string) => { checks.push({ name, ok, detail }); return ok; };
  const done = (d: Diagnosis, a?: Attempt): DoctorReport => ({ target, ok: d.code === 'OK', diagnosis: d, checks, ...(a?.protocol ? { protocol: a.protocol } : {}), ...(a?.cipher ? { cipherSuite: a.cipher } : {}) });
  const trust = readCertificates(Buffer.from(o.ca), 'CA bundle');
  if ((o.cert === undefined) !== (o.key === undefined)) throw new MtlsError('USAGE', 'give both --cert and --key, or neither');

  // 1. Our own credentials, before any packet: a mismatched key or a wrong certificate is ours to fix.
  const ours = o.cert !== undefined ? readCertificates(Buffer.from(o.cert), 'our certificate') : [];
  const leaf = ours[0];
  let ourProblem: Diagnosis | undefined;
  if (leaf && o.key !== undefined) {
    const key = typeof o.key === 'object' && !Buffer.isBuffer(o.key) ? o.key : loadPrivateKey(o.key, 'our key', o.passphrase);
    if (!check('our key matches our certificate', !!leaf.publicKey && keysMatch(key, leaf.publicKey), `'${certLabel(leaf)}'`)) {
      return done(diag('KEY_MISMATCH', `our key does not belong to our certificate '${certLabel(leaf)}'`, 'pass the key that was generated with this certificate (mtls inspect CERT --key KEY shows whether a pair matches)'));
    }
    const clientAuth = !leaf.extKeyUsage || leaf.extKeyUsage.includes(OID.clientAuth);
    if (!check('our certificate is for client authentication', clientAuth, clientAuth ? 'EKU allows clientAuth' : `EKU is ${leaf.extKeyUsage!.join(', ')} without clientAuth`)) {
      ourProblem = diag('OUR_CERT_NOT_CLIENT', `our certificate '${certLabel(leaf)}' is not a client certificate (its extended key usage lacks clientAuth)`, 'issue a client certificate: mtls issue client NAME (or mtls issue spiffe)');
    }
    const expired = now > leaf.notAfter;
    const early = now < leaf.notBefore;
    check('our certificate is valid now', !expired && !early, expired ? `expired ${relativeTime(leaf.notAfter, now)}` : early ? `valid only ${relativeTime(leaf.notBefore, now)}` : `until ${leaf.notAfter.toISOString()}`);
    if (expired) ourProblem = diag('OUR_CERT_EXPIRED', `our certificate '${certLabel(leaf)}' expired ${relativeTime(leaf.notAfter, now)}`, 'renew it: mtls issue client NAME (or set up automatic renewal)');
  }

  // 2. The connection, verified by us rather than by OpenSSL so that every finding is seen in one attempt.
  const a = await attempt(o, leaf !== undefined);
  const code = a.error?.code ?? '';
  if (['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'].includes(code) || (code === 'ETIMEDOUT' && a.firstServerBytes.length === 0 && !a.view.clientHello)) {
    check('TCP connection', false, `${code}`);
    const why: Record<string, string> = { ECONNREFUSED: 'nothing listens on that port', ENOTFOUND: 'the host name does not resolve', EAI_AGAIN: 'the host name does not resolve (DNS not answering)', ETIMEDOUT: 'no answer to the TCP connection (a firewall dropping packets, or the wrong host)' };
    return done(diag('UNREACHABLE', `${target} is not reachable: ${why[code] ?? code}`, 'check the host and port, and that the service is running and listening on that interface'));
  }
  check('TCP connection', true, 'connected');
  const first = a.firstServerBytes;
  if (first.length > 0 && (first[0]! < 20 || first[0]! > 23)) {
    check('the server speaks TLS', false, `it answered ${JSON.stringify(first.subarray(0, 40).toString('latin1'))}`);
    return done(diag('NOT_TLS', `${target} does not speak TLS: it answered ${JSON.stringify(first.subarray(0, 24).toString('latin1'))}`, 'use the TLS port of the service, or put mTLS in front of it (mtls proxy server)'));
  }
  if (!a.view.serverHello) {
    const alert = a.view.serverAlerts[0]?.name;
    if (alert === 'protocol_version' || alert === 'handshake_failure' || alert === 'insufficient_security' || /VERSION|NO_(SHARED|SUITABLE)_CIPHER|HANDSHAKE_FAILURE/.test(code)) {
      const p = await probeLegacy(o);
      check('a common TLS version and cipher suite', false, p ? `the server picks ${p.protocol} with ${p.cipher}` : `the server refused every offer (${alert ?? code})`);
      if (p && (p.protocol === 'TLSv1' || p.protocol === 'TLSv1.1' || p.protocol === 'SSLv3')) {
        return done(diag('NO_COMMON_VERSION', `the server only speaks ${p.protocol}; we require TLS 1.2 or newer`, 'enable TLS 1.2 and 1.3 on the server (e.g. nginx ssl_protocols TLSv1.2 TLSv1.3)'), a);
      }
      if (p) return done(diag('NO_COMMON_CIPHER', `the server chose ${p.protocol} with ${p.cipher}, which we do not allow (we require ECDHE key exchange with an AEAD cipher)`, 'enable ECDHE-ECDSA-AES128-GCM-SHA256 (or another ECDHE+GCM/ChaCha20 suite) on the server'), a);
      return done(diag('NO_COMMON_CIPHER', `the server accepts none of our TLS versions, cipher suites or groups (alert ${alert ?? code})`, 'enable TLS 1.2+ with an ECDHE+AEAD suite and the X25519 or P-256 group on the server'), a);
    }
    if (first.length === 0) {
      const what = code === 'ETIMEDOUT' ? `accepted the connection but sent nothing within ${o.timeoutMs ?? 5000} ms` : 'closed the connection without a TLS answer';
      check('the server speaks TLS', false, `it ${what}`);
      return done(diag('NOT_TLS', `${target} ${what}`, 'check that this port serves TLS (and not, e.g., a plaintext protocol that waits for the client to speak first)'), a);
    }
    return done(diag('HANDSHAKE_FAILED', `the handshake failed before the server chose its parameters (${alert ?? a.error?.message ?? 'no ServerHello'})`, 'run mtls trace for the full exchange'), a);
  }
  check('the server speaks TLS', true, `${a.protocol ?? 'TLS'}${a.cipher ? `, ${a.cipher}` : ''}`);

  // 3. The server's chain, by our own path validation.
  const chain = a.chain.length ? a.chain : (a.view.serverCertificates ?? []).map((d) => parseCertificate(d, 'server certificate'));
  let serverProblem: Diagnosis | undefined;
  if (chain.length) {
    const name = (o.servername ?? o.host).replace(/^\[|\]$/g, '');
    const r = verifyChain(chain[0]!, { trustAnchors: trust, intermediates: chain.slice(1), at: now, purpose: 'server', ...(o.spiffeId ? { spiffeId: o.spiffeId } : hostCheck(name)) });
    check("the server's chain is trusted, valid now and for this name", r.valid, r.valid ? `'${certLabel(chain[0]!)}'` : r.problems.map((p) => p.message).join('; '));
    if (!r.valid) serverProblem = serverDiagnosis(r.problems, chain, trust, name, now);
  } else {
    check("the server's chain", null, 'not seen (resumed session or handshake cut short)');
  }

  // 4. What the server made of us.
  const asked = a.view.certificateRequest !== undefined;
  check('the server asks for a client certificate', asked ? true : null, asked ? `acceptable CAs: ${a.view.certificateRequest!.certificateAuthorities.length || 'any'}` : 'no CertificateRequest seen');
  const alert = a.view.serverAlerts.find((x) => x.description !== 0);
  const rejected = alert !== undefined || (a.error !== undefined) || a.closedAfterHandshake;
  let verdict: Diagnosis | undefined;
  if (rejected && !serverProblem) {
    verdict = theirVerdict(alert?.name ?? alertFromCode(code), leaf !== undefined, asked, ourProblem);
    check('the server accepts us', false, alert ? `alert ${alert.name}` : a.closedAfterHandshake ? 'it closed the connection right after our handshake' : (a.error?.message ?? ''));
  } else if (!rejected) {
    check('the server accepts us', true, leaf ? `with '${certLabel(leaf)}'` : 'without a client certificate');
  }

  // 5. The clocks.
  let skew: Diagnosis | undefined;
  if (a.httpDate) {
    const d = a.httpDate.getTime() - now.getTime();
    const ok = Math.abs(d) <= (o.maxSkewMs ?? 60_000) + 1000;
    check("the server's clock agrees with ours", ok, `its Date header says ${a.httpDate.toISOString()}, ${Math.round(Math.abs(d) / 1000)} s ${d > 0 ? 'ahead' : 'behind'}`);
    if (!ok) skew = diag('CLOCK_SKEW', `the server's clock is ${Math.round(Math.abs(d) / 1000)} s ${d > 0 ? 'ahead of' : 'behind'} ours (its HTTP Date: ${a.httpDate.toISOString()})`, 'run NTP on both machines; certificates that are valid on one clock look expired or not yet valid on the other');
  }
  if (a.httpStatus) check('HTTP response', null, a.httpStatus);

  const d = serverProblem ?? verdict ?? skew ?? ourProblem;
  if (d) return done(d, a);
  return done(diag('OK', `mutual TLS works: ${a.protocol}, ${a.cipher}${leaf ? `, as '${certLabel(leaf)}'` : ''}`, 'nothing to fix'), a);
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

/** One real connection through the byte tap, with verification left to us. */
function attempt(o: DoctorOptions, withCert: boolean): Promise<Attempt> {
  const capture = new Capture();
  return new Promise((resolve) => {
    let settled = false;
    const a: Omit<Attempt, 'view' | 'firstServerBytes'> = { chain: [], closedAfterHandshake: false };
    let handshook = false;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...a, view: analyzeHandshake(capture.clientBytes, capture.serverBytes, capture.keylog), firstServerBytes: capture.serverBytes.subarray(0, 64) });
    };
    const servername = o.servername ?? o.host;
    const socket = tls.connect({
      socket: tappedSocket(o.host, o.port, capture), ca: Buffer.from(o.ca).toString(), rejectUnauthorized: false,
      checkServerIdentity: () => undefined, minVersion: 'TLSv1.2', ciphers: SECURE_CIPHERS, ecdhCurve: SECURE_GROUPS,
      ...(withCert ? { cert: Buffer.from(o.cert as string | Buffer).toString(), key: typeof o.key === 'object' && !Buffer.isBuffer(o.key) ? exportPrivateKey(o.key) : o.key!, ...(o.passphrase ? { passphrase: o.passphrase } : {}) } : {}),
      ...(isIpLiteral(servername) ? {} : { servername }),
    });
    socket.on('keylog', (line: Buffer) => capture.keylog.push(line.toString('latin1')));
    const timer = setTimeout(() => { a.error ??= Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }); finish(); }, o.timeoutMs ?? 5000);
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (handshook) a.closedAfterHandshake = true;
      a.error ??= err;
      finish();
    });
    const closed = () => {
      if (handshook && !a.httpStatus) a.closedAfterHandshake = true;
      finish();
    };
    socket.on('end', closed);
    socket.on('close', closed);
    socket.once('secureConnect', () => {
      handshook = true;
      a.chain = peerChain(socket);
      a.protocol = socket.getProtocol() ?? undefined;
      a.cipher = socket.getCipher()?.standardName;
      // TLS 1.3: the server's verdict on our certificate arrives after our secureConnect.
      setTimeout(() => {
        if (settled) return;
        if (o.http === false) return finish();
        let head = '';
        socket.on('data', (d: Buffer) => {
          head += d.toString('latin1');
          if (!head.includes('\r\n\r\n') && head.length < 16384) return;
          a.httpStatus = head.split('\r\n')[0];
          const date = /\r\ndate:\s*([^\r\n]+)/i.exec(head)?.[1];
          if (date && !Number.isNaN(Date.parse(date))) a.httpDate = new Date(date);
          finish();
        });
        socket.write(`HEAD / HTTP/1.1\r\nHost: ${servername}\r\nUser-Agent: mtls-doctor\r\nConnection: close\r\n\r\n`);
        setTimeout(finish, 1500);
      }, o.confirmMs ?? 400);
    });
  });
}

/** Asks what the server does speak when it refused our offer: TLS 1.0+ and any cipher, no verification. */
function probeLegacy(o: DoctorOptions): Promise<{ protocol: string; cipher: string } | undefined> {
  return new Promise((resolve) => {
    const servername = o.servername ?? o.host;
    const s = tls.connect({ host: o.host, port: o.port, rejectUnauthorized: false, minVersion: 'TLSv1', ciphers: 'ALL:@SECLEVEL=0', ...(isIpLiteral(servername) ? {} : { servername }) });
    const t = setTimeout(() => { s.destroy(); resolve(undefined); }, o.timeoutMs ?? 5000);
    s.once('secureConnect', () => { clearTimeout(t); const r = { protocol: s.getProtocol() ?? '?', cipher: s.getCipher().standardName ?? s.getCipher().name }; s.destroy(); resolve(r); });
    s.once('error', () => { clearTimeout(t); s.destroy(); resolve(undefined); });
  });
}

/** Exit status for a diagnosis, on the CLI's scale: 0 healthy, 2 our input, 3 the server refused us, 4 network. */
export function doctorExitCode(code: DiagnosisCode): number {
  if (code === 'OK') return 0;
  if (code === 'KEY_MISMATCH') return 2;
  if (code === 'UNREACHABLE' || code === 'NOT_TLS') return 4;
  if (['CLIENT_CERT_REQUIRED', 'OUR_CERT_NOT_CLIENT', 'OUR_CERT_EXPIRED', 'OUR_CA_UNKNOWN', 'OUR_CERT_REVOKED', 'NOT_AUTHORIZED', 'OUR_CERT_REJECTED'].includes(code)) return 3;
  return 1;
}
