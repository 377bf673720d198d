import type { Command } from 'commander';
import { exitCodeFor, MtlsError } from '../errors.js';
import { readCertificates, type Certificate } from '../pki/certificate.js';
import { crlSetProblem, readCrls, revocationStatus } from '../pki/crl.js';
import type { OcspStatus } from '../pki/ocsp-check.js';
import { ocspOutcome } from '../tls/ocsp-fetch.js';
import { formatDn } from '../pki/names.js';
import { verifyChain } from '../pki/verify.js';
import { certLabel, PROFILES, VERIFY_PROBLEMS, type Profile, type Purpose } from '../pki/path-rules.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { parseTime, printJson } from './common.js';
import { caFileOr } from './common.js';

export function registerVerify(program: Command): void {
  program
    .command('verify <cert>')
    .description('validate a certificate path (RFC 5280, strict profile); exit 0 valid, 1 invalid, 2 unusable input')
    .option('--ca <bundle>', 'trusted CA certificates (PEM; default: the CA home ca.crt, as in every other command)')
    .option('--home <dir>', 'CA home for the default --ca')
    .option('--untrusted <file>', 'intermediate certificates that may complete the chain (PEM)')
    .option('--at <time>', 'validate at this ISO-8601 time instead of now')
    .option('--dns <name>', 'the certificate must be valid for this host name')
    .option('--ip <address>', 'the certificate must be valid for this IP address')
    .option('--purpose <purpose>', 'server | client | any', 'any')
    .option('--max-depth <n>', 'most intermediate CAs allowed', '8')
    .option('--spiffe-id <pattern>', 'the certificate must carry a SPIFFE ID matching this (* = one segment)')
    .option(
      '--profile <profile>',
      'strict | rfc5280 (a leaf without EKU, a critical EKU or SAN) | compat (also old CAs without key identifiers)',
      'strict',
    )
    .option(
      '--crl <file...>',
      "CRLs (PEM or DER) of the CAs of the path: each certificate is looked up in its issuer's CRL",
    )
    .option(
      '--ocsp [url]',
      "ask the leaf's OCSP responder (the URL in it, or URL), and the responder of every CA of the path that names one",
    )
    .option('--json', 'machine-readable output')
    .action(
      async (
        file: string,
        o: {
          ca?: string;
          home?: string;
          untrusted?: string;
          at?: string;
          dns?: string;
          ip?: string;
          purpose: string;
          maxDepth: string;
          spiffeId?: string;
          profile: string;
          crl?: string[];
          ocsp?: string | true;
          json?: boolean;
        },
      ) => {
        if (o.dns !== undefined && o.ip !== undefined)
          throw new MtlsError('USAGE', 'give either --dns or --ip, not both');
        if (!['server', 'client', 'any'].includes(o.purpose))
          throw new MtlsError('USAGE', `--purpose '${o.purpose}' must be server, client or any`);
        if (!(PROFILES as readonly string[]).includes(o.profile))
          throw new MtlsError('USAGE', `--profile '${o.profile}' must be one of ${PROFILES.join(', ')}`);
        if (!/^\d{1,3}$/.test(o.maxDepth))
          throw new MtlsError('USAGE', `--max-depth '${o.maxDepth}' must be a whole number`);
        const [leaf, ...rest] = readCertificates(readInput(file, 'certificate'), file);
        const caFile = caFileOr(o.ca, o.home);
        const anchors = readCertificates(readInput(caFile, 'CA bundle', MAX_INPUT.bundle), caFile);
        const intermediates = [
          ...rest,
          ...(o.untrusted
            ? readCertificates(readInput(o.untrusted, 'intermediates file', MAX_INPUT.bundle), o.untrusted)
            : []),
        ];
        const at = o.at === undefined ? new Date() : parseTime(o.at, '--at');
        const result = verifyChain(leaf!, {
          trustAnchors: anchors,
          intermediates,
          at,
          purpose: o.purpose as Purpose,
          maxDepth: Number(o.maxDepth),
          profile: o.profile as Profile,
          ...(o.dns !== undefined ? { dns: o.dns } : {}),
          ...(o.ip !== undefined ? { ip: o.ip } : {}),
          ...(o.spiffeId !== undefined ? { spiffeId: o.spiffeId } : {}),
        });
        // Revocation, by the CRLs given: each checked first (signed by its CA, current), and each certificate of a
        // valid path looked up in its issuer's CRL. A CA of the path without a CRL is 'unknown', which fails.
        const crls = (o.crl ?? []).flatMap((f) => readCrls(readInput(f, 'CRL file', MAX_INPUT.crl), `CRL file ${f}`));
        const crlProblem = crls.length ? crlSetProblem(crls, [], [...anchors, ...intermediates], at, 'CRL') : undefined;
        if (crlProblem) throw new MtlsError('BAD_INPUT', crlProblem);
        const statuses = o.crl && result.valid ? revocationStatus(result.chain, crls) : undefined;
        statuses?.forEach((s, depth) => {
          const c = result.chain[depth]!;
          if (s.status === 'good') return;
          result.problems.push({
            code: s.status === 'revoked' ? 'REVOKED' : 'REVOCATION_UNKNOWN',
            depth,
            message:
              s.status === 'revoked'
                ? `'${certLabel(c)}' (serial ${c.serialHex}) is revoked by the CRL of '${formatDn(s.crl!.issuer)}'`
                : `no CRL given for '${formatDn(c.issuer)}', the issuer of '${certLabel(c)}': its status is unknown; add that CA's CRL with --crl`,
          });
          result.valid = false;
        });
        const ocsp = o.ocsp && result.valid ? await ocspStatuses(result.chain, o.ocsp, at) : undefined;
        ocsp?.forEach((s, depth) => {
          const c = result.chain[depth]!;
          if (!s || s.status === 'good') return;
          result.problems.push(
            s.status === 'failed'
              ? { code: 'REVOCATION_UNKNOWN', depth, message: s.why }
              : s.status === 'revoked'
                ? {
                    code: 'REVOKED',
                    depth,
                    message: `'${certLabel(c)}' (serial ${c.serialHex}) is revoked since ${s.revokedAt?.toISOString()} (${s.reason}), says the OCSP responder ${s.url}`,
                  }
                : {
                    code: 'REVOCATION_UNKNOWN',
                    depth,
                    message: `the OCSP responder ${s.url} does not know '${certLabel(c)}' (serial ${c.serialHex}): not issued by that CA, or not recorded`,
                  },
          );
          result.valid = false;
        });
        const statusLine = (depth: number) => {
          const s = statuses?.[depth];
          const q = ocsp?.[depth];
          const lines: { status: string; source: string }[] = [];
          if (s) {
            const from = s.crl
              ? `CRL of '${formatDn(s.crl.issuer)}', ${s.crl.revoked.size === 1 ? '1 entry' : `${s.crl.revoked.size} entries`}, next update ${s.crl.nextUpdate?.toISOString() ?? 'none'}`
              : 'trust anchor';
            lines.push({ status: s.status, source: from });
          }
          if (q)
            lines.push(
              q.status === 'failed'
                ? { status: 'unknown', source: q.why }
                : {
                    status: q.status,
                    source: `OCSP ${q.url}, signed by ${q.signedBy}, next update ${q.nextUpdate?.toISOString() ?? 'none'}`,
                  },
            );
          return lines;
        };
        if (o.json) {
          printJson({
            valid: result.valid,
            at: at.toISOString(),
            profile: o.profile,
            spiffeId: result.spiffeId?.uri ?? null,
            chain: result.chain.map((c, i) => ({
              subject: formatDn(c.subject),
              issuer: formatDn(c.issuer),
              serial: c.serialHex,
              fingerprint256: c.fingerprint256,
              ...(statuses ? { revocation: statusLine(i)[0] } : {}),
              ...(ocsp ? { ocsp: statusLine(i).at(-1) ?? null } : {}),
            })),
            problems: result.problems.map((p) => ({ ...p, error: VERIFY_PROBLEMS[p.code] })),
          });
        } else if (result.valid) {
          console.log(`${file}: OK`);
          console.log(`  chain: ${result.chain.map((c) => `'${certLabel(c)}'`).join(' <- ')} (trusted)`);
          if (result.spiffeId) console.log(`  SPIFFE ID: ${result.spiffeId.uri}`);
          result.chain.forEach((c, i) => {
            for (const s of statusLine(i)) console.log(`  revocation: '${certLabel(c)}' ${s.status} (${s.source})`);
            if (ocsp && !statuses && i > 0 && i < result.chain.length - 1 && !ocsp[i])
              console.log(`  revocation: '${certLabel(c)}' not checked (it names no OCSP responder; add --crl)`);
          });
        } else {
          console.log(`${file}: INVALID`);
          for (const p of result.problems) console.log(`  - ${p.message}`);
        }
        process.exitCode = result.valid ? 0 : exitCodeFor(VERIFY_PROBLEMS[result.problems[0]!.code]);
      },
    );
}

type OcspOutcome = (OcspStatus & { url: string }) | { status: 'failed'; why: string };

/**
 * The OCSP status of each certificate of a valid `chain` (leaf first): the leaf is asked at `url` (or the responder
 * its AIA names; none is a failure), each CA below the anchor only if it names a responder (undefined otherwise).
 */
async function ocspStatuses(
  chain: readonly Certificate[],
  url: string | true,
  at: Date,
): Promise<(OcspOutcome | undefined)[]> {
  return Promise.all(
    chain.slice(0, -1).map(async (cert, i): Promise<OcspOutcome | undefined> => {
      const where = i === 0 && url !== true ? url : cert.ocspUrls?.[0];
      if (!where)
        return i === 0
          ? {
              status: 'failed',
              why: `'${certLabel(cert)}' names no OCSP responder (no AIA OCSP URL): give one with --ocsp URL, or use --crl`,
            }
          : undefined;
      const o = await ocspOutcome(cert, chain[i + 1]!, { url: where, timeoutMs: 5000, now: at });
      return !o || 'failed' in o ? { status: 'failed', why: o?.failed ?? '' } : { ...o.status, url: where };
    }),
  );
}
