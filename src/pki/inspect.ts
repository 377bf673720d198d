import crypto, { type KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { relativeTime } from '../text/duration.js';
import { fingerprint, parseCertificate, type Certificate } from './certificate.js';
import { checkSignature } from './signing.js';
import { parseCsr } from './csr.js';
import { describeKey, keysMatch, loadPrivateKey } from './keys.js';
import { sameDn } from './name-match.js';
import { formatDn } from './names.js';
import { oidName } from './oid.js';
import { decodePem, encodePem, looksLikePem } from './pem.js';
import { looksLikePkcs12, parsePkcs12 } from './pkcs12.js';
import { certLabel, leafSpiffeId } from './path-rules.js';

export interface CertificateReport {
  kind: 'certificate';
  label: string;
  subject: string;
  issuer: string;
  serial: string;
  version: number;
  notBefore: string;
  notAfter: string;
  /** "expires in 3 days", "expired 2 hours ago", "not valid until ... (in 4 days)". */
  validity: string;
  status: 'valid' | 'expired' | 'not yet valid';
  selfSigned: boolean;
  isCa: boolean;
  pathLen?: number;
  keyUsage: string[];
  extKeyUsage: string[];
  san: { dns: string[]; ip: string[]; email: string[]; uri: string[] };
  spiffeId?: string;
  nameConstraints?: { permitted: string[]; excluded: string[] };
  publicKey: string;
  signatureAlgorithm: string;
  fingerprints: { sha256: string; sha1: string };
  subjectKeyId?: string;
  authorityKeyId?: string;
  problems: string[];
}

export interface CsrReport {
  kind: 'csr';
  subject: string;
  publicKey: string;
  san: { dns: string[]; ip: string[]; email: string[]; uri: string[] };
  requestsCa: boolean;
  signature: 'valid';
}

export interface KeyReport {
  kind: 'private-key';
  type: string;
  /** Indexes (into `objects`) of the certificates whose public key this key matches. */
  matchesCertificates: number[];
}

export type InspectObject = CertificateReport | CsrReport | KeyReport;

export interface InspectReport {
  source: string;
  format: 'PEM' | 'DER' | 'PKCS#12';
  objects: InspectObject[];
  /** For two or more certificates: is each one issued (and signed) by the next? */
  chain?: { ordered: boolean; notes: string[] };
}

export interface InspectOptions {
  now: Date;
  /** Password for PKCS#12 input, passphrase for an encrypted key. */
  password?: string;
  /** A separate private key file to match against the certificates. */
  extraKey?: KeyObject;
}

function names(san: { dns: string[]; ip: string[]; email: string[]; uri: string[] } | undefined) {
  return { dns: san?.dns ?? [], ip: san?.ip ?? [], email: san?.email ?? [], uri: san?.uri ?? [] };
}

export function describeCertificate(c: Certificate, now: Date): CertificateReport {
  const status = now < c.notBefore ? 'not yet valid' : now > c.notAfter ? 'expired' : 'valid';
  const validity =
    status === 'expired'
      ? `expired ${relativeTime(c.notAfter, now)}`
      : status === 'not yet valid'
        ? `not valid until ${c.notBefore.toISOString()} (${relativeTime(c.notBefore, now)})`
        : `expires ${relativeTime(c.notAfter, now)}`;
  const selfSigned =
    sameDn(c.subject, c.issuer) &&
    !!c.publicKey &&
    checkSignature(c.signatureAlgorithm, c.signatureParams, c.tbsDer, c.signature, c.publicKey) === null;
  const r: CertificateReport = {
    kind: 'certificate',
    label: certLabel(c),
    subject: formatDn(c.subject),
    issuer: formatDn(c.issuer),
    serial: c.serialHex,
    version: c.version,
    notBefore: c.notBefore.toISOString(),
    notAfter: c.notAfter.toISOString(),
    validity,
    status,
    selfSigned,
    isCa: c.basicConstraints?.ca ?? false,
    keyUsage: c.keyUsage ?? [],
    extKeyUsage: (c.extKeyUsage ?? []).map(oidName),
    san: names(c.san),
    publicKey: c.publicKey ? describeKey(c.publicKey) : 'unreadable',
    signatureAlgorithm: oidName(c.signatureAlgorithm),
    fingerprints: { sha256: c.fingerprint256, sha1: fingerprint(c.der, 'sha1') },
    problems: c.problems,
  };
  if (c.basicConstraints?.pathLen !== undefined) r.pathLen = c.basicConstraints.pathLen;
  const spiffe = leafSpiffeId(c);
  if (spiffe.id) r.spiffeId = spiffe.id.uri;
  if (c.nameConstraints) {
    const flat = (n: typeof c.nameConstraints.permitted) =>
      n
        ? [
            ...n.dns.map((d) => `DNS:${d}`),
            ...n.ip.map((i) => `IP:${i}`),
            ...n.email.map((e) => `email:${e}`),
            ...n.uri.map((u) => `URI:${u}`),
            ...n.directory.map((d) => `DirName:${formatDn(d)}`),
          ]
        : [];
    r.nameConstraints = { permitted: flat(c.nameConstraints.permitted), excluded: flat(c.nameConstraints.excluded) };
  }
  if (c.subjectKeyId) r.subjectKeyId = c.subjectKeyId.toString('hex');
  if (c.authorityKeyId) r.authorityKeyId = c.authorityKeyId.toString('hex');
  return r;
}

/** Reads anything we know (PEM blocks of any supported kind, DER certificate/CSR/key, PKCS#12) and describes it. */
export function inspect(data: Buffer, source: string, opts: InspectOptions): InspectReport {
  if (data.length === 0) throw new MtlsError('BAD_INPUT', `${source} is empty`);
  const certs: Certificate[] = [];
  const keys: KeyObject[] = [];
  const objects: InspectObject[] = [];
  let format: InspectReport['format'];
  if (looksLikePem(data)) {
    format = 'PEM';
    const blocks = decodePem(data.toString('latin1'), source);
    if (blocks.length === 0) throw new MtlsError('BAD_PEM', `${source}: no PEM block found`);
    for (const b of blocks) {
      if (b.label === 'CERTIFICATE' || b.label === 'TRUSTED CERTIFICATE') certs.push(parseCertificate(b.der, source));
      else if (b.label === 'CERTIFICATE REQUEST' || b.label === 'NEW CERTIFICATE REQUEST')
        objects.push(csrReport(b.der, source));
      else if (b.label.endsWith('PRIVATE KEY'))
        keys.push(loadPrivateKey(encodePem(b.label, b.der), source, opts.password));
      else
        throw new MtlsError(
          'UNSUPPORTED',
          `${source}: PEM block '${b.label}' is not something mtls inspects (certificates, CSRs, private keys)`,
        );
    }
  } else if (looksLikePkcs12(data)) {
    format = 'PKCS#12';
    if (opts.password === undefined)
      throw new MtlsError('WRONG_PASSPHRASE', `${source} is a PKCS#12 file; give its password with --password-file`);
    const p12 = parsePkcs12(data, opts.password, source);
    certs.push(...p12.certificates.map((d) => parseCertificate(d, source)));
    keys.push(...p12.keys);
  } else {
    format = 'DER';
    const attempts: (() => void)[] = [
      () => certs.push(parseCertificate(data, source)),
      () => objects.push(csrReport(data, source)),
      () => keys.push(loadPrivateKey(data, source, opts.password)),
    ];
    const errors: unknown[] = [];
    for (const a of attempts) {
      try {
        a();
        break;
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length === attempts.length) {
      const pass = errors.find((e) => e instanceof MtlsError && e.code === 'WRONG_PASSPHRASE');
      if (pass) throw pass;
      throw new MtlsError(
        'BAD_DER',
        `${source} is neither PEM nor a DER certificate, CSR, private key or PKCS#12 file`,
      );
    }
  }
  if (opts.extraKey) keys.push(opts.extraKey);
  const certStart = objects.length;
  objects.push(...certs.map((c) => describeCertificate(c, opts.now)));
  for (const k of keys) {
    const matches = certs.flatMap((c, i) => (c.publicKey && keysMatch(k, c.publicKey) ? [certStart + i] : []));
    objects.push({ kind: 'private-key', type: describeKey(crypto.createPublicKey(k)), matchesCertificates: matches });
  }
  const report: InspectReport = { source, format, objects };
  if (certs.length > 1) report.chain = chainOrder(certs);
  return report;
}

function csrReport(der: Buffer, source: string): CsrReport {
  const csr = parseCsr(der, source);
  return {
    kind: 'csr',
    subject: formatDn(csr.subject),
    publicKey: describeKey(csr.publicKey),
    san: names(csr.san),
    requestsCa: csr.requestsCa,
    signature: 'valid',
  };
}

/** Each certificate should be followed by its issuer, leaf first (RFC 8446 4.4.2, RFC 5246 7.4.2). */
export function chainOrder(certs: Certificate[]): { ordered: boolean; notes: string[] } {
  const notes: string[] = [];
  for (let i = 0; i + 1 < certs.length; i++) {
    const c = certs[i]!;
    const next = certs[i + 1]!;
    if (!sameDn(c.issuer, next.subject)) {
      notes.push(
        `certificate ${i + 1} ('${certLabel(c)}') is followed by '${certLabel(next)}', ` +
          `which is not its issuer ('${formatDn(c.issuer)}')`,
      );
    } else if (
      next.publicKey &&
      checkSignature(c.signatureAlgorithm, c.signatureParams, c.tbsDer, c.signature, next.publicKey)
    ) {
      notes.push(
        `certificate ${i + 1} ('${certLabel(c)}') is not signed by the key of the ` +
          `next certificate ('${certLabel(next)}')`,
      );
    } else {
      notes.push(`certificate ${i + 1} ('${certLabel(c)}') is issued by certificate ${i + 2} ('${certLabel(next)}')`);
    }
  }
  return { ordered: notes.every((n) => n.includes(' is issued by ')), notes };
}
