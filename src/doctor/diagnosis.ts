import { parseCertificate, readCertificates, type Certificate } from '../pki/certificate.js';
import { keysMatch, loadPrivateKey } from '../pki/keys.js';
import { hostCheck } from '../pki/names.js';
import { OID, oidName } from '../pki/oid.js';
import { verifyChain } from '../pki/verify.js';
import { certLabel } from '../pki/path-rules.js';
import { relativeTime } from '../text/duration.js';
import { closedGracefully } from '../trace/analyze.js';
import { classifyTlsError } from '../tls/errors.js';
import { diag, type Diagnosis, type DoctorReport } from './codes.js';
import { alertFromCode, clockFinding, httpFinding, serverDiagnosis, theirVerdict } from './verdicts.js';
import { Findings, type Attempt, type LegacyProbe, type OurSide, type RevocationSeen } from './findings.js';

/**
 * The pure half of `mtls doctor`: from what one connection showed (an Attempt) to a diagnosis, no sockets. The
 * sockets are in doctor.ts.
 */

/** Step 1, before any packet: a mismatched key or a wrong certificate is ours to fix. */
export function checkOurSide(
  o: OurSide,
  f: Findings,
  now: Date,
  revocation?: RevocationSeen,
): { leaf?: Certificate; problem?: Diagnosis; stop?: Diagnosis } {
  const ours = o.cert !== undefined ? readOurs(o.cert) : [];
  const leaf = ours[0];
  if (!leaf || o.key === undefined) return {};
  let problem: Diagnosis | undefined;
  const key =
    typeof o.key === 'object' && !Buffer.isBuffer(o.key) ? o.key : loadPrivateKey(o.key, 'our key', o.passphrase);
  if (
    !f.check(
      'our key matches our certificate',
      !!leaf.publicKey && keysMatch(key, leaf.publicKey),
      `'${certLabel(leaf)}'`,
    )
  ) {
    return {
      leaf,
      stop: diag(
        'KEY_MISMATCH',
        `our key does not belong to our certificate '${certLabel(leaf)}'`,
        'pass the key that was generated with this certificate (mtls inspect CERT ' +
          '--key KEY shows whether a pair matches)',
      ),
    };
  }
  const clientAuth = !leaf.extKeyUsage || leaf.extKeyUsage.includes(OID.clientAuth);
  if (
    !f.check(
      'our certificate is for client authentication',
      clientAuth,
      clientAuth ? 'EKU allows clientAuth' : `EKU is ${leaf.extKeyUsage!.map(oidName).join(', ')} without clientAuth`,
    )
  ) {
    problem = diag(
      'OUR_CERT_NOT_CLIENT',
      `our certificate '${certLabel(leaf)}' is not a client certificate (its extended key usage lacks clientAuth)`,
      'issue a client certificate: mtls issue client NAME (or mtls issue spiffe)',
    );
  }
  const expired = now > leaf.notAfter;
  const early = now < leaf.notBefore;
  f.check(
    'our certificate is valid now',
    !expired && !early,
    expired
      ? `expired ${relativeTime(leaf.notAfter, now)}`
      : early
        ? `valid only ${relativeTime(leaf.notBefore, now)}`
        : `until ${leaf.notAfter.toISOString()}`,
  );
  if (expired)
    problem = diag(
      'OUR_CERT_EXPIRED',
      `our certificate '${certLabel(leaf)}' expired ${relativeTime(leaf.notAfter, now)}`,
      `renew it with the CA that issued it: mtls renew ${o.certFile ?? 'CERT'}`,
    );
  if (revocation && revocationCheck(f, 'our certificate is not revoked', revocation) === false)
    problem = diag(
      'OUR_CERT_REVOKED',
      `our certificate '${certLabel(leaf)}' is ${describeRevoked(revocation)}`,
      'get a new certificate from the CA (a revoked one stays revoked): mtls issue client NAME',
    );
  return { leaf, ...(problem ? { problem } : {}) };
}

const readOurs = (cert: string | Buffer) => readCertificates(Buffer.from(cert), 'our certificate');

/** One check line for a revocation status: true good, false revoked, null unknown or not to be had. */
function revocationCheck(f: Findings, name: string, r: RevocationSeen): boolean | null {
  const ok = r.status === 'good' ? true : r.status === 'revoked' ? false : null;
  const detail =
    r.status === 'failed'
      ? `could not be checked: ${r.why}`
      : r.status === 'revoked'
        ? `${describeRevoked(r)}`
        : `${r.status} (${r.source})`;
  return f.check(name, ok, detail);
}

function describeRevoked(r: RevocationSeen): string {
  if (r.status !== 'revoked') return r.status;
  return `revoked since ${r.revokedAt?.toISOString() ?? '?'} (${r.reason ?? 'unspecified'}), says ${r.source}`;
}

const NOT_TLS_FIX = 'use the TLS port of the service, or put mTLS in front of it (mtls proxy server)';
const UNREACHABLE_CODES = ['ECONNREFUSED', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN'];

/** Whether the attempt ended before a ServerHello for want of a common version or cipher (then probe what it speaks). */
export function needsLegacyProbe(a: Attempt): boolean {
  if (a.view.serverHello || !reachedTls(a)) return false;
  const alert = a.view.serverAlerts[0]?.name;
  const code = a.error?.code ?? '';
  return (
    alert === 'protocol_version' ||
    alert === 'handshake_failure' ||
    alert === 'insufficient_security' ||
    /VERSION|NO_(SHARED|SUITABLE)_CIPHER|HANDSHAKE_FAILURE/.test(code)
  );
}

function reachedTls(a: Attempt): boolean {
  const code = a.error?.code ?? '';
  if (UNREACHABLE_CODES.includes(code)) return false;
  if (code === 'ETIMEDOUT' && a.firstServerBytes.length === 0 && !a.view.clientHello) return false;
  const first = a.firstServerBytes;
  return !(first.length > 0 && (first[0]! < 20 || first[0]! > 23)) && !answerIsNotTls(a);
}

/** What came back is no TLS record (a bad record header): the same verdict connect and trace give (tls/errors.ts). */
function answerIsNotTls(a: Attempt): boolean {
  return a.error !== undefined && a.view.serverHello === undefined && classifyTlsError(a.error).code === 'NOT_TLS';
}

/** Steps 2 to 5: the connection, the server's chain, the server's verdict on us, the clocks. */
export function diagnoseAttempt(
  o: OurSide,
  trust: Certificate[],
  f: Findings,
  ours: { leaf?: Certificate; problem?: Diagnosis },
  a: Attempt,
  legacy: LegacyProbe,
  now: Date,
): DoctorReport {
  const target = f.target;
  const { leaf } = ours;
  const code = a.error?.code ?? '';
  if (
    UNREACHABLE_CODES.includes(code) ||
    (code === 'ETIMEDOUT' && a.firstServerBytes.length === 0 && !a.view.clientHello)
  ) {
    f.check('TCP connection', false, `${code}`);
    const why: Record<string, string> = {
      ECONNREFUSED: 'nothing listens on that port',
      ENOTFOUND: 'the host name does not resolve',
      EAI_AGAIN: 'the host name does not resolve (DNS not answering)',
      ETIMEDOUT: 'no answer to the TCP connection (a firewall dropping packets, or the wrong host)',
    };
    return f.report(
      diag(
        'UNREACHABLE',
        `${target} is not reachable: ${why[code] ?? code}`,
        'check the host and port, and that the service is running and listening on that interface',
      ),
    );
  }
  f.check('TCP connection', true, 'connected');
  const first = a.firstServerBytes;
  if (first.length > 0 && (first[0]! < 20 || first[0]! > 23)) {
    f.check('the server speaks TLS', false, `it answered ${JSON.stringify(first.subarray(0, 40).toString('latin1'))}`);
    return f.report(
      diag(
        'NOT_TLS',
        `${target} does not speak TLS: it answered ${JSON.stringify(first.subarray(0, 24).toString('latin1'))}`,
        'use the TLS port of the service, or put mTLS in front of it (mtls proxy server)',
      ),
    );
  }
  if (answerIsNotTls(a)) {
    f.check('the server speaks TLS', false, `its answer is not a TLS record (${a.error!.code})`);
    return f.report(
      diag('NOT_TLS', `${target} does not speak TLS: its answer is not a TLS record (${a.error!.code})`, NOT_TLS_FIX),
      a,
    );
  }
  if (!a.view.serverHello) {
    const alert = a.view.serverAlerts[0]?.name;
    if (needsLegacyProbe(a)) {
      const p = legacy;
      f.check(
        'a common TLS version and cipher suite',
        false,
        p ? `the server picks ${p.protocol} with ${p.cipher}` : `the server refused every offer (${alert ?? code})`,
      );
      if (p && (p.protocol === 'TLSv1' || p.protocol === 'TLSv1.1' || p.protocol === 'SSLv3')) {
        return f.report(
          diag(
            'NO_COMMON_VERSION',
            `the server only speaks ${p.protocol}; we require TLS 1.2 or newer`,
            'enable TLS 1.2 and 1.3 on the server (e.g. nginx ssl_protocols TLSv1.2 TLSv1.3)',
          ),
          a,
        );
      }
      if (p)
        return f.report(
          diag(
            'NO_COMMON_CIPHER',
            `the server chose ${p.protocol} with ${p.cipher}, which we do not allow (we ` +
              `require ECDHE key exchange with an AEAD cipher)`,
            'enable ECDHE-ECDSA-AES128-GCM-SHA256 (or another ECDHE+GCM/ChaCha20 suite) on the server',
          ),
          a,
        );
      return f.report(
        diag(
          'NO_COMMON_CIPHER',
          `the server accepts none of our TLS versions, cipher suites or groups (alert ${alert ?? code})`,
          'enable TLS 1.2+ with an ECDHE+AEAD suite and the X25519 or P-256 group on the server',
        ),
        a,
      );
    }
    if (first.length === 0) {
      const what =
        code === 'ETIMEDOUT'
          ? `accepted the connection but sent nothing within ${o.timeoutMs ?? 5000} ms`
          : 'closed the connection without a TLS answer';
      f.check('the server speaks TLS', false, `it ${what}`);
      return f.report(
        diag(
          'NOT_TLS',
          `${target} ${what}`,
          'check that this port serves TLS (and not, e.g., a plaintext protocol that ' +
            'waits for the client to speak first)',
        ),
        a,
      );
    }
    return f.report(
      diag(
        'HANDSHAKE_FAILED',
        `the handshake failed before the server chose its parameters (${alert ?? a.error?.message ?? 'no ServerHello'})`,
        'run mtls trace for the full exchange',
      ),
      a,
    );
  }
  f.check('the server speaks TLS', true, `${a.protocol ?? 'TLS'}${a.cipher ? `, ${a.cipher}` : ''}`);

  // 3. The server's chain, by our own path validation.
  const chain = a.chain.length
    ? a.chain
    : (a.view.serverCertificates ?? []).map((d) => parseCertificate(d, 'server certificate'));
  let serverProblem: Diagnosis | undefined;
  if (chain.length) {
    const name = (o.servername ?? o.host).replace(/^\[|\]$/g, '');
    const r = verifyChain(chain[0]!, {
      trustAnchors: trust,
      intermediates: chain.slice(1),
      at: now,
      purpose: 'server',
      ...(o.spiffeId ? { spiffeId: o.spiffeId } : hostCheck(name)),
    });
    f.check(
      "the server's chain is trusted, valid now and for this name",
      r.valid,
      r.valid ? `'${certLabel(chain[0]!)}'` : r.problems.map((p) => p.message).join('; '),
    );
    if (!r.valid) serverProblem = serverDiagnosis(r.problems, chain, trust, name, now);
    const revoked =
      r.valid &&
      a.serverRevocation &&
      revocationCheck(f, "the server's certificate is not revoked", a.serverRevocation) === false;
    if (revoked)
      serverProblem = diag(
        'SERVER_CERT_REVOKED',
        `the server's certificate '${certLabel(chain[0]!)}' is ${describeRevoked(a.serverRevocation!)}`,
        "the server's operator must replace its certificate (a revoked one stays revoked): mtls issue server NAME",
      );
  } else {
    f.check("the server's chain", null, 'not seen (resumed session or handshake cut short)');
  }

  // 4. What the server made of us.
  const asked = a.view.certificateRequest !== undefined;
  f.check(
    'the server asks for a client certificate',
    asked ? true : null,
    asked
      ? `acceptable CAs: ${a.view.certificateRequest!.certificateAuthorities.length || 'any'}`
      : 'no CertificateRequest seen',
  );
  const alert = a.view.serverAlerts.find((x) => x.description !== 0);
  // close_notify and no alert after the handshake: the server accepted us and closed on purpose (issue 16).
  const graceful = alert === undefined && a.closedAfterHandshake && closedGracefully(a.view);
  const rejected = !graceful && (alert !== undefined || a.error !== undefined || a.closedAfterHandshake);
  let verdict: Diagnosis | undefined;
  if (rejected && !serverProblem) {
    verdict = theirVerdict(alert?.name ?? alertFromCode(code), leaf !== undefined, asked, ours.problem);
    f.check(
      'the server accepts us',
      false,
      alert
        ? `alert ${alert.name}`
        : a.closedAfterHandshake
          ? 'it closed the connection right after our handshake'
          : (a.error?.message ?? ''),
    );
  } else if (!rejected) {
    const how = leaf ? `with '${certLabel(leaf)}'` : 'without a client certificate';
    f.check('the server accepts us', true, graceful ? `${how}, then closed the connection (close_notify)` : how);
  }

  const skew = clockFinding(o, f, a, now);
  const forbidden = httpFinding(f, a);

  const d = serverProblem ?? verdict ?? forbidden ?? skew ?? ours.problem;
  if (d) return f.report(d, a);
  return f.report(
    diag(
      'OK',
      `mutual TLS works: ${a.protocol}, ${a.cipher}${leaf ? `, as '${certLabel(leaf)}'` : ''}`,
      'nothing to fix',
    ),
    a,
  );
}
