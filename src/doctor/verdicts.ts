import type { Certificate } from '../pki/certificate.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn } from '../pki/names.js';
import { certLabel, type VerifyProblem } from '../pki/path-rules.js';
import { relativeTime } from '../text/duration.js';
import { diag, type Diagnosis } from './codes.js';
import type { Attempt, Findings, OurSide } from './findings.js';
import { authorizationRefusal, describeAnswer } from './http-probe.js';

/** What each finding means: the server's chain problems and the server's refusals, each with its cause and fix. */

export function serverDiagnosis(
  problems: VerifyProblem[],
  chain: Certificate[],
  trust: Certificate[],
  name: string,
  now: Date,
): Diagnosis {
  const p = problems[0]!;
  const top = chain.at(-1)!;
  switch (p.code) {
    case 'UNKNOWN_ISSUER': {
      const selfSigned = sameDn(top.issuer, top.subject);
      const issuer = formatDn(top.issuer);
      if (!selfSigned && !trust.some((t) => sameDn(t.subject, top.issuer))) {
        return chain.length === 1
          ? diag(
              'SERVER_CHAIN_INCOMPLETE',
              `the server sent only its own certificate, issued by '${issuer}', which it ` +
                `did not send and we do not trust`,
              `configure the server to send its full chain (leaf + intermediates); if '${issuer}' ` +
                `is a root, add it to --ca`,
            )
          : diag(
              'SERVER_UNTRUSTED',
              `the server's chain ends at '${certLabel(top)}', issued by '${issuer}', which is not in our trust bundle`,
              `add the CA that issued it to --ca, or have the server send its missing intermediate`,
            );
      }
      return diag(
        'SERVER_UNTRUSTED',
        `the server's certificate is issued by '${selfSigned ? certLabel(top) : issuer}', ` +
          `which is not in our trust bundle${selfSigned ? '' : ' (a CA of that name is, but it did not sign it)'}`,
        'pass the right CA bundle with --ca, or issue the server certificate from the CA we trust',
      );
    }
    case 'EXPIRED':
      return diag(
        'SERVER_CERT_EXPIRED',
        `the server's ${p.depth === 0 ? 'certificate' : 'chain'} has expired: ${p.message}`,
        'renew the server certificate (and reload the server)',
      );
    case 'NOT_YET_VALID': {
      const c = chain[p.depth]!;
      const ahead = c.notBefore.getTime() - now.getTime();
      return ahead < 7 * 86400e3
        ? diag(
            'CLOCK_SKEW',
            `the server's certificate becomes valid only ${relativeTime(c.notBefore, now)}: ` +
              `the issuing CA's clock is ahead of ours, or ours is behind`,
            'run NTP on both machines (and back-date new certificates by a few minutes)',
          )
        : diag('SERVER_CERT_INVALID', p.message, 'issue the server a certificate that is valid now');
    }
    case 'NAME_MISMATCH':
    case 'SPIFFE_ID_MISMATCH':
      return diag(
        'SERVER_WRONG_NAME',
        p.message,
        `connect with the name on the certificate (--servername), or reissue it with '${name}' among its SANs`,
      );
    default:
      return diag(
        'SERVER_CERT_INVALID',
        p.message,
        'issue the server a certificate with the server profile from a CA we trust',
      );
  }
}

/** The server refused us: which alert (or silence) means what, refined by what we found in our own certificate. */
export function theirVerdict(
  alert: string | undefined,
  sentCert: boolean,
  asked: boolean,
  ours: Diagnosis | undefined,
): Diagnosis {
  if (
    !sentCert &&
    (alert === 'certificate_required' || alert === 'handshake_failure' || (asked && alert === undefined))
  ) {
    return diag(
      'CLIENT_CERT_REQUIRED',
      'the server requires a client certificate and we presented none',
      'pass --cert and --key (issue one with: mtls issue client NAME)',
    );
  }
  if (ours && alert !== 'unknown_ca' && alert !== 'certificate_revoked') return ours;
  switch (alert) {
    case 'unknown_ca':
      return diag(
        'OUR_CA_UNKNOWN',
        'the server does not trust the CA that issued our certificate (alert unknown_ca)',
        "add our CA certificate to the server's client-CA bundle (or get a certificate from the CA it trusts)",
      );
    case 'certificate_expired':
      return diag(
        'OUR_CERT_EXPIRED',
        'the server says our certificate has expired (alert certificate_expired)',
        "renew our certificate (mtls renew CERT); if it is valid by our clock, the server's clock is wrong",
      );
    case 'certificate_revoked':
      return diag(
        'OUR_CERT_REVOKED',
        'the server says our certificate is revoked (alert certificate_revoked)',
        'get a new certificate (a revoked one stays revoked)',
      );
    case 'unsupported_certificate':
      return diag(
        'OUR_CERT_NOT_CLIENT',
        'the server refused our certificate as unsuitable (alert unsupported_certificate): ' +
          'usually a missing clientAuth EKU',
        'issue a client certificate: mtls issue client NAME',
      );
    case 'access_denied':
      return diag(
        'NOT_AUTHORIZED',
        'the server verified our certificate but does not allow our identity (alert access_denied)',
        "ask the server's owner for an allow rule for our identity",
      );
    case undefined:
      return diag(
        'NOT_AUTHORIZED',
        'the server closed the connection right after verifying our certificate: ' +
          'it trusts the chain but its policy does not allow our identity (or it rejects ' +
          'the certificate silently)',
        "ask the server's owner for an allow rule for our identity (mtls inspect " +
          "shows it); the server's log names the reason",
      );
    default:
      return diag(
        'OUR_CERT_REJECTED',
        `the server rejected our certificate (alert ${alert})`,
        "check the server's log; mtls trace shows the exchange",
      );
  }
}

export function alertFromCode(code: string): string | undefined {
  const m = /ALERT_([A-Z_]+)$/.exec(code);
  return m ? m[1]!.toLowerCase() : undefined;
}

/** The clocks: the server's HTTP Date against ours (a skew makes valid certificates look expired or early). */
export function clockFinding(o: OurSide, f: Findings, a: Attempt, now: Date): Diagnosis | undefined {
  let skew: Diagnosis | undefined;
  const httpDate = a.http?.date;
  if (httpDate) {
    const d = httpDate.getTime() - now.getTime();
    const ok = Math.abs(d) <= (o.maxSkewMs ?? 60_000) + 1000;
    f.check(
      "the server's clock agrees with ours",
      ok,
      `its Date header says ${httpDate.toISOString()}, ${Math.round(Math.abs(d) / 1000)} ` +
        `s ${d > 0 ? 'ahead' : 'behind'}`,
    );
    if (!ok)
      skew = diag(
        'CLOCK_SKEW',
        `the server's clock is ${Math.round(Math.abs(d) / 1000)} s ${d > 0 ? 'ahead of' : 'behind'} ` +
          `ours (its HTTP Date: ${httpDate.toISOString()})`,
        'run NTP on both machines; certificates that are valid on one clock look expired or not yet valid on the other',
      );
  }
  return skew;
}

/** HTTPS: TLS accepted us, and the application's authorization may still refuse (a 403 is not "healthy"). */
export function httpFinding(f: Findings, a: Attempt): Diagnosis | undefined {
  if (!a.http) return undefined;
  const refusal = authorizationRefusal(a.http);
  f.check('HTTP response', refusal ? false : null, describeAnswer(a.http));
  if (!refusal) return undefined;
  return diag(
    'NOT_AUTHORIZED',
    refusal,
    "ask the server's owner for an allow rule for our identity on this path (mtls inspect shows the identity)",
  );
}
