import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import crypto, { type KeyObject } from 'node:crypto';
import { parseCertificate, type Certificate } from '../../src/pki/certificate.js';
import { randomSerial, signCertificate } from '../../src/pki/signing.js';
import { encodeOid, readChildren, readSingle, seq, tlv } from '../../src/pki/der.js';
import {
  authorityKeyIdExt,
  basicConstraintsExt,
  extKeyUsageExt,
  keyIdentifier,
  keyUsageExt,
  nameConstraintsExt,
  subjectAltNameExt,
  subjectKeyIdExt,
  type KeyUsageName,
  type NameConstraintsInput,
  type RawExtension,
} from '../../src/pki/extensions.js';
import { exportPrivateKey, generateKeyPair, type KeyType } from '../../src/pki/keys.js';
import { buildName } from '../../src/pki/names.js';
import { OID } from '../../src/pki/oid.js';
import { encodePem } from '../../src/pki/pem.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'bin', 'mtls.js');
const DAY = 86400e3;

export function tempDir(prefix = 'mtls-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** A certificate with its key, for building test chains by hand (including broken ones). */
export interface TestCert {
  cert: Certificate;
  key: KeyObject;
  pem: string;
}

export interface MakeCertOptions {
  cn: string;
  /** Omit for self-signed. */
  issuer?: TestCert;
  ca?: boolean;
  pathLen?: number;
  keyUsage?: KeyUsageName[];
  eku?: string[];
  dns?: string[];
  ip?: string[];
  uri?: string[];
  email?: string[];
  notBefore?: Date;
  notAfter?: Date;
  nameConstraints?: NameConstraintsInput;
  extra?: RawExtension[];
  keyType?: KeyType;
  /** Leave out basicConstraints entirely. */
  noBasicConstraints?: boolean;
  /** The key identifiers: left out, or marked critical (RFC 5280 4.2.1.1/4.2.1.2 forbid both). */
  aki?: 'omit' | 'critical';
  ski?: 'omit' | 'critical';
  /**
   * An authorityKeyIdentifier even on a self-signed certificate: with this key identifier (default: the issuer's),
   * and `issuerAndSerial` to name the issuer's issuer and serial too.
   */
  akiOf?: { keyId?: Buffer; issuerAndSerial?: boolean };
  /** The subject's attributes instead of CN=cn; [] for an empty subject. */
  subject?: { oid: string; value: string }[];
  sanCritical?: boolean;
  ekuCritical?: boolean;
  /** The key pair (e.g. DSA or P-192, which generateKeyPair refuses to make). */
  keys?: { privateKey: KeyObject; publicKey: KeyObject };
  /** Sign with SHA-1 instead (ECDSA issuers only): a broken signature algorithm. */
  sha1?: boolean;
  /** This SubjectPublicKeyInfo DER instead of the key pair's (ECDSA P-256 issuers only). */
  rawSpki?: Buffer;
}

/** Builds any certificate, valid or deliberately broken, straight on the pki layer (no CA rules). */
export function makeCert(o: MakeCertOptions): TestCert {
  const { privateKey, publicKey } = o.keys ?? generateKeyPair(o.keyType ?? 'ec-p256');
  const subject = buildName(o.subject ?? [{ oid: OID.commonName, value: o.cn }]);
  const issuerName = o.issuer ? o.issuer.cert.subjectDer : subject;
  const ext: RawExtension[] = [];
  const serial = randomSerial();
  if (!o.noBasicConstraints) ext.push(basicConstraintsExt(o.ca ?? false, o.pathLen));
  ext.push(keyUsageExt(o.keyUsage ?? (o.ca ? ['keyCertSign', 'cRLSign'] : ['digitalSignature'])));
  if (o.eku) ext.push(extKeyUsageExt(o.eku, o.ekuCritical));
  if (o.dns || o.ip || o.uri || o.email)
    ext.push(
      subjectAltNameExt({ dns: o.dns ?? [], ip: o.ip ?? [], uri: o.uri ?? [], email: o.email ?? [] }, !!o.sanCritical),
    );
  if (o.nameConstraints) ext.push(nameConstraintsExt(o.nameConstraints));
  const critical = (e: RawExtension, how: 'omit' | 'critical' | undefined) =>
    how === 'critical' ? { ...e, critical: true } : e;
  if (o.ski !== 'omit') ext.push(critical(subjectKeyIdExt(keyIdentifier(publicKey)), o.ski));
  if (o.akiOf) {
    const id = o.akiOf.keyId ?? o.issuer?.cert.subjectKeyId ?? keyIdentifier(publicKey);
    const extra = o.akiOf.issuerAndSerial
      ? [tlv(0xa1, tlv(0xa4, o.issuer?.cert.issuerDer ?? issuerNameDer(o))), tlv(0x82, o.issuer?.cert.serial ?? serial)]
      : [];
    ext.push({ oid: OID.authorityKeyIdentifier, critical: false, value: seq(tlv(0x80, id), ...extra) });
  } else if (o.issuer && o.aki !== 'omit')
    ext.push(critical(authorityKeyIdExt(o.issuer.cert.subjectKeyId ?? keyIdentifier(o.issuer.cert.publicKey!)), o.aki));
  ext.push(...(o.extra ?? []));
  const now = Date.now();
  const der = signCertificate(
    {
      serial,
      issuer: issuerName,
      subject,
      notBefore: o.notBefore ?? new Date(now - DAY),
      notAfter: o.notAfter ?? new Date(now + 30 * DAY),
      publicKey,
      extensions: ext,
    },
    o.issuer?.key ?? privateKey,
  );
  const final = o.sha1 || o.rawSpki ? resign(der, o.issuer?.key ?? privateKey, { sha1: o.sha1, spki: o.rawSpki }) : der;
  return { cert: parseCertificate(final), key: privateKey, pem: encodePem('CERTIFICATE', final) };
}

const issuerNameDer = (o: MakeCertOptions) => buildName(o.subject ?? [{ oid: OID.commonName, value: o.cn }]);

/**
 * The certificate re-signed by `key` after editing its TBS: `sha1` puts ecdsa-with-SHA1 in (no CA may sign so any
 * more), `spki` another SubjectPublicKeyInfo (e.g. an EC point off its curve, which no key pair can make).
 */
function resign(der: Buffer, key: KeyObject, edit: { sha1?: boolean; spki?: Buffer }): Buffer {
  const cert = parseCertificate(der);
  const tbs = readSingle(cert.tbsDer, 'tbs');
  const parts = readChildren(tbs.value, 'tbs').map((t) => tbs.value.subarray(t.start, t.end));
  // [version, serial, signature, issuer, validity, subject, spki, extensions]
  const alg = edit.sha1 ? seq(encodeOid(OID.ecdsaWithSha1)) : parts[2]!;
  parts[2] = alg;
  if (edit.spki) parts[6] = edit.spki;
  const newTbs = seq(...parts);
  const sig = crypto.sign(edit.sha1 ? 'sha1' : 'sha256', newTbs, key);
  return seq(newTbs, alg, tlv(0x03, Buffer.concat([Buffer.from([0]), sig])));
}

/** The unencrypted PKCS#8 PEM of a test certificate's key. */
export const keyPem = (c: TestCert): string => exportPrivateKey(c.key);

export function writePem(dir: string, name: string, certs: TestCert[]): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, certs.map((c) => c.pem).join(''));
  return p;
}

export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `mtls ...` as a user would (a real process), with its own CA home unless `env` says otherwise. */
export function mtls(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string | Buffer; cwd?: string } = {},
): RunResult {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...opts.env },
    input: opts.input,
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** `mtls` without blocking the event loop, for a test whose peer runs in this process. */
export function mtlsAsync(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...opts.env }, cwd: ROOT });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => (stdout += d));
    c.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => c.kill('SIGKILL'), 60_000);
    c.on('close', (code) => {
      clearTimeout(t);
      resolve({ status: code ?? -1, stdout, stderr });
    });
  });
}

/** Runs the real `openssl` CLI. */
/**
 * `openssl ocsp` arguments: ask `url` about each [issuer file, certificate file] pair, and check the answer's
 * signature against `caFile` when given.
 */
export function ocspArgs(pairs: [issuer: string, cert: string][], url: string, caFile?: string): string[] {
  return [
    'ocsp',
    ...pairs.flatMap(([issuer, cert]) => ['-issuer', issuer, '-cert', cert]),
    '-url',
    url,
    ...(caFile ? ['-CAfile', caFile] : []),
  ];
}

export function openssl(args: string[], input?: string): RunResult {
  const r = spawnSync('openssl', args, { encoding: 'utf8', input, timeout: 60_000 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** A P-256 key and a PKCS#10 request for it made by `openssl req` in `dir`, with `-addext` for each of `ext`. */
export function opensslCsr(dir: string, subj: string, ext: string[] = [], name = 'req'): { key: string; req: string } {
  const key = path.join(dir, `${name}.key`);
  const req = path.join(dir, `${name}.csr`);
  const r = openssl([
    'req',
    '-new',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    key,
    '-out',
    req,
    '-subj',
    subj,
    ...ext.flatMap((e) => ['-addext', e]),
  ]);
  if (r.status !== 0) throw new Error(`openssl req: ${r.stderr}`);
  return { key, req };
}

const crlTime = (d: Date) => d.toISOString().replace(/[-:T]/g, '').slice(2, 14) + 'Z';

/**
 * A CRL signed by `issuer` that revokes `revoked` (none: an empty CRL), made by `openssl ca -gencrl` from an
 * index file, written to `out` (a new temp file by default). The issuer's key goes to a 0600 temp file.
 */
export function opensslCrl(
  issuer: TestCert,
  revoked: TestCert[],
  out = path.join(tempDir('mtls-crl-'), 'crl.pem'),
  times: { lastUpdate?: Date; nextUpdate?: Date } = {},
): string {
  const d = tempDir('mtls-crl-');
  fs.writeFileSync(path.join(d, 'ca.pem'), issuer.pem);
  fs.writeFileSync(path.join(d, 'ca.key'), keyPem(issuer), { mode: 0o600 });
  const rev = crlTime(new Date(Date.now() - 60e3));
  fs.writeFileSync(
    path.join(d, 'index.txt'),
    revoked
      .map((c) => `R\t${crlTime(c.cert.notAfter)}\t${rev}\t${c.cert.serialHex.toUpperCase()}\tunknown\t/CN=revoked\n`)
      .join(''),
  );
  fs.writeFileSync(
    path.join(d, 'ca.cnf'),
    `[ca]\ndefault_ca=d\n[d]\ndatabase=${d}/index.txt\ndefault_md=sha256\ndefault_crl_days=1\n`,
  );
  const tmp = path.join(d, 'crl.pem');
  const r = spawnSync(
    'openssl',
    [
      'ca',
      '-gencrl',
      '-config',
      path.join(d, 'ca.cnf'),
      '-keyfile',
      path.join(d, 'ca.key'),
      '-cert',
      path.join(d, 'ca.pem'),
      '-out',
      tmp,
      ...(times.lastUpdate ? ['-crl_lastupdate', crlTime(times.lastUpdate)] : []),
      ...(times.nextUpdate ? ['-crl_nextupdate', crlTime(times.nextUpdate)] : []),
    ],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`openssl ca -gencrl failed: ${r.stderr}`);
  fs.copyFileSync(tmp, `${out}.tmp`);
  fs.renameSync(`${out}.tmp`, out);
  return out;
}

/**
 * The chain of the hostile-peer report (issue 12.3): `levels` levels of `width` CA certificates, where every
 * certificate of a level has the same subject and key and is signed by the (shared) key of the level above; the
 * top level's issuer is nowhere. Each verifies under every one of the level above: width^levels paths.
 */
export function latticeChain(
  width: number,
  levels: number,
  leafEku?: string[],
): { leaf: Certificate; leafKey: KeyObject; intermediates: Certificate[] } {
  const keys = Array.from({ length: levels + 2 }, () => generateKeyPair('ec-p256'));
  const name = (l: number) => buildName([{ oid: OID.commonName, value: `Level ${l}` }]);
  const now = Date.now();
  const intermediates: Certificate[] = [];
  for (let l = 1; l <= levels; l++) {
    for (let i = 0; i < width; i++) {
      intermediates.push(
        parseCertificate(
          signCertificate(
            {
              serial: randomSerial(),
              issuer: name(l + 1),
              subject: name(l),
              notBefore: new Date(now - DAY - i * 1000),
              notAfter: new Date(now + DAY),
              publicKey: keys[l]!.publicKey,
              extensions: [
                basicConstraintsExt(true),
                keyUsageExt(['keyCertSign', 'cRLSign']),
                subjectKeyIdExt(keyIdentifier(keys[l]!.publicKey)),
                authorityKeyIdExt(keyIdentifier(keys[l + 1]!.publicKey)),
              ],
            },
            keys[l + 1]!.privateKey,
          ),
        ),
      );
    }
  }
  const leaf = parseCertificate(
    signCertificate(
      {
        serial: randomSerial(),
        issuer: name(1),
        subject: buildName([{ oid: OID.commonName, value: 'leaf' }]),
        notBefore: new Date(now - DAY),
        notAfter: new Date(now + DAY),
        publicKey: keys[0]!.publicKey,
        extensions: [
          basicConstraintsExt(false),
          keyUsageExt(['digitalSignature']),
          authorityKeyIdExt(keyIdentifier(keys[1]!.publicKey)),
          ...(leafEku ? [extKeyUsageExt(leafEku)] : []),
        ],
      },
      keys[1]!.privateKey,
    ),
  );
  return { leaf, leafKey: keys[0]!.privateKey, intermediates };
}
