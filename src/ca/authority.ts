import type { KeyObject } from 'node:crypto';
import type { RevocationReason } from '../pki/crl-writer.js';
import fs from 'node:fs';
import { MtlsError } from '../errors.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { randomSerial, signCertificate, wholeSeconds } from '../pki/signing.js';
import { keyIdentifier } from '../pki/extensions.js';
import {
  DEFAULT_KEY_TYPE,
  generateKeyPair,
  keyWeakness,
  loadPrivateKey,
  parseKeyType,
  type KeyType,
} from '../pki/keys.js';
import { nameConstraintViolations } from '../pki/name-match.js';
import { buildName, formatDn, parseSpiffeId, printable } from '../pki/names.js';
import { OID } from '../pki/oid.js';
import { decodeCertificatesPem, encodePem } from '../pki/pem.js';
import {
  checkLeafNames,
  leafExtensions,
  revocationUrls,
  type LeafNames,
  type LeafProfile,
  type RequestedNames,
} from '../pki/profiles.js';
import type { PostgresStore } from '../store/postgres.js';
import { SqliteStore } from '../store/sqlite.js';
import type { AddOptions, CertificateStore, InventoryRecord } from '../store/store.js';
import { shortTime } from '../text/duration.js';
import { checkPrivateFile, writeFileAtomic } from '../io/files.js';
import { crlPaths, foreignCertificate, rootCrlNotice, stageCrls, type CrlSigners } from './revocation.js';
import { caPaths, type CaConfig } from './home.js';
import { createCaHome } from './init.js';
import { BACKDATE_MS, DAY, type InitOptions } from './init.js';

export interface IssueRequest {
  profile: LeafProfile;
  /** File name and subject CN. */
  name: string;
  names: RequestedNames;
  /** Default 90 days. */
  validityMs?: number;
  /** Key to generate (ignored when `publicKey` is given). Default ec-p256. */
  keyType?: KeyType;
  /** Certify this key (from a CSR) instead of generating one. */
  publicKey?: KeyObject;
  now?: Date;
  /** End at the intermediate's notAfter rather than refuse a validity that would outlive it. */
  clampToIssuer?: boolean;
}

export interface Issued {
  certificate: Certificate;
  /** PEM: the leaf followed by the intermediate. */
  chainPem: string;
  /** Present when the CA generated the key. */
  privateKey?: KeyObject;
  record: InventoryRecord;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function checkCertName(name: string): string {
  if (!NAME_RE.test(name)) {
    throw new MtlsError(
      'BAD_NAME',
      `name '${printable(name)}' must be 1-64 letters, digits, dot, hyphen or underscore ` +
        `(it becomes the file name and the CN)`,
    );
  }
  return name;
}

/**
 * The inventory in PostgreSQL at `url`; a new database takes the home's SQLite inventory. Its module is loaded only
 * for a CA whose inventory is there: pg adds ~60 ms to every start.
 */
async function connectPostgres(url: string, sqlite: string): Promise<PostgresStore> {
  const { PostgresStore } = await import('../store/postgres.js');
  return PostgresStore.connect(url, async () => {
    const local = new SqliteStore(sqlite);
    try {
      return { records: await local.list(), crlNumber: local.crlNumber() };
    } finally {
      await local.close();
    }
  });
}

/**
 * The certificate authority: a self-signed root and an online intermediate (pathlen 0) that signs leaves,
 * an inventory of everything issued, and the rules that keep issued certificates correct.
 */
export class CertificateAuthority {
  private intermediateKey?: KeyObject;

  private constructor(
    readonly home: string,
    readonly config: CaConfig,
    readonly root: Certificate,
    readonly intermediate: Certificate,
    readonly store: CertificateStore,
    private readonly passphrase: string | undefined,
  ) {}

  /**
   * Creates a CA in `home`. Everything is built in a temporary sibling directory and renamed into place, so
   * a failure leaves nothing behind; an existing CA is never overwritten.
   */
  static async init(opts: InitOptions): Promise<CertificateAuthority> {
    await createCaHome(opts);
    const ca = await CertificateAuthority.open(opts.home, opts.passphrase);
    // The first CRLs, while the root key is here to sign the root's (for a year): ca init suggests moving it
    // offline, and revocations must not need it.
    await ca.publishCrl();
    return ca;
  }

  /**
   * Opens an existing CA. The intermediate key is read (and decrypted) only when something is signed. `store`: a
   * postgres:// URL for the inventory (CA replicas share one; an empty one starts with the home's SQLite inventory);
   * it is recorded in HOME/store.url, so that every later command on this home (revoke, ca list, issue) uses that
   * inventory too, never the SQLite file it left. Without either, the home's inventory.db.
   */
  static async open(home: string, passphrase?: string, opts: { store?: string } = {}): Promise<CertificateAuthority> {
    const p = caPaths(home);
    if (!fs.existsSync(p.config)) {
      throw new MtlsError(
        'CA_NOT_FOUND',
        `no CA in ${home}; create one with 'mtls ca init --home ${home}' or point --home / MTLS_HOME at yours`,
      );
    }
    let config: CaConfig;
    try {
      config = JSON.parse(fs.readFileSync(p.config, 'utf8')) as CaConfig;
    } catch (err) {
      throw new MtlsError('BAD_INPUT', `${p.config} is damaged (${(err as Error).message}); restore it from a backup`);
    }
    checkCaHome(home);
    const root = parseCertificate(pemFileDer(p.rootCert), p.rootCert);
    const intermediate = parseCertificate(pemFileDer(p.intermediateCert), p.intermediateCert);
    const recorded = fs.existsSync(p.store) ? fs.readFileSync(p.store, 'utf8').trim() : undefined;
    if (recorded !== undefined) checkPrivateFile(p.store, 'inventory URL');
    const url = opts.store ?? recorded;
    const store = url ? await connectPostgres(url, p.inventory) : new SqliteStore(p.inventory);
    if (url && url !== recorded) writeFileAtomic(p.store, `${url}\n`, 0o600);
    return new CertificateAuthority(home, config, root, intermediate, store, passphrase);
  }

  /** The chain clients need next to a leaf: the intermediate. */
  get intermediatePem(): string {
    return encodePem('CERTIFICATE', this.intermediate.der);
  }

  get bundlePem(): string {
    return encodePem('CERTIFICATE', this.root.der);
  }

  async close(): Promise<void> {
    await this.store.close();
  }

  /** The intermediate's key, for what the CA signs itself (leaves, CRLs, its OCSP responder's certificate). */
  signingKey(): KeyObject {
    if (!this.intermediateKey) {
      const file = caPaths(this.home).intermediateKey;
      let data: Buffer;
      try {
        data = fs.readFileSync(file);
      } catch {
        throw new MtlsError(
          'CA_NOT_FOUND',
          `the intermediate key ${file} is missing; restore it to issue certificates`,
        );
      }
      this.intermediateKey = loadPrivateKey(data, `CA key ${file}`, this.passphrase);
    }
    return this.intermediateKey;
  }

  /** Checks names against the CA's own constraints and trust domain before anything is signed. */
  private checkPolicy(names: LeafNames): void {
    const td = this.config.trustDomain;
    for (const uri of names.uri) {
      const id = parseSpiffeId(uri);
      if (td && id.trustDomain !== td) {
        throw new MtlsError(
          'NAME_NOT_PERMITTED',
          `refused: SPIFFE ID ${uri} is outside this CA's trust domain '${td}'`,
        );
      }
    }
    const violations = this.intermediate.nameConstraints
      ? nameConstraintViolations(
          { ...names, directory: [], other: [], problems: [] },
          [],
          this.intermediate.nameConstraints,
        )
      : [];
    if (violations.length)
      throw new MtlsError(
        'NAME_NOT_PERMITTED',
        `refused: ${violations[0]}; this CA may only issue for its permitted names`,
      );
  }

  /**
   * What renewing `cert` asks for: the same profile, names and lifetime, from this CA's inventory (a certificate this
   * CA did not issue, or a revoked one, is refused). The key is new: a renewal is also a key rotation.
   */
  async renewRequest(cert: Certificate, name: string): Promise<IssueRequest> {
    const record = await this.store.get(cert.serialHex);
    if (!record || record.fingerprint256 !== cert.fingerprint256) {
      throw new MtlsError(
        'CA_NOT_FOUND',
        `'${name}' (serial ${cert.serialHex}) was not issued by the CA at ${this.home}; renew it with the CA that issued it (--home)`,
      );
    }
    if (record.status !== 'valid') {
      throw new MtlsError(
        'CSR_REFUSED',
        `'${name}' is ${record.status}; a ${record.status} certificate is not renewed, issue a new one`,
      );
    }
    if (record.profile !== 'server' && record.profile !== 'client' && record.profile !== 'spiffe') {
      throw new MtlsError(
        'CSR_REFUSED',
        `'${name}' is a ${record.profile} certificate; only leaf certificates are renewed`,
      );
    }
    const san = cert.san ?? { dns: [], ip: [], email: [], uri: [] };
    return {
      profile: record.profile,
      name,
      names: { dns: san.dns, ip: san.ip, email: san.email, ...(record.spiffeId ? { spiffeId: record.spiffeId } : {}) },
      validityMs: cert.notAfter.getTime() - cert.notBefore.getTime() - BACKDATE_MS,
    };
  }

  /**
   * Issues a leaf certificate and records it. `publish` (e.g. writing the files) runs inside the inventory
   * transaction: if it fails, the record is rolled back.
   */
  async issue(
    req: IssueRequest,
    publish?: (issued: Issued) => void | Promise<void>,
    add?: AddOptions,
  ): Promise<Issued> {
    checkCertName(req.name);
    const names = checkLeafNames(req.profile, req.names);
    this.checkPolicy(names);
    const now = wholeSeconds(req.now ?? new Date());
    const validity = req.validityMs ?? 90 * DAY;
    let notAfter = wholeSeconds(new Date(now.getTime() + validity));
    // The CA service never refuses an agent for the intermediate's end: its certificates stop with the intermediate.
    if (req.clampToIssuer && notAfter > this.intermediate.notAfter) notAfter = this.intermediate.notAfter;
    if (notAfter > this.intermediate.notAfter) {
      const maxDays = Math.floor((this.intermediate.notAfter.getTime() - now.getTime()) / DAY);
      throw new MtlsError(
        'VALIDITY_EXCEEDS_ISSUER',
        `the certificate would outlive the intermediate CA (valid until ${shortTime(this.intermediate.notAfter)}); ` +
          `use --validity ${Math.max(maxDays, 0)}d or less, or renew the intermediate`,
      );
    }
    if (now < this.intermediate.notBefore || now > this.intermediate.notAfter) {
      throw new MtlsError(
        'VALIDITY_EXCEEDS_ISSUER',
        `the intermediate CA is not valid now (valid ${shortTime(this.intermediate.notBefore)} ` +
          `to ${shortTime(this.intermediate.notAfter)})`,
      );
    }
    const notBefore = new Date(Math.max(now.getTime() - BACKDATE_MS, this.intermediate.notBefore.getTime()));
    let privateKey: KeyObject | undefined;
    let publicKey = req.publicKey;
    if (!publicKey) {
      const pair = generateKeyPair(parseKeyType(req.keyType ?? DEFAULT_KEY_TYPE));
      privateKey = pair.privateKey;
      publicKey = pair.publicKey;
    }
    const weak = keyWeakness(publicKey);
    if (weak) throw new MtlsError('CSR_REFUSED', `refused: ${weak}`);
    const subject = buildName([
      { oid: OID.organizationName, value: this.config.name },
      { oid: OID.commonName, value: req.name },
    ]);
    const issuerKeyId = this.intermediate.subjectKeyId ?? keyIdentifier(this.intermediate.publicKey!);
    const der = signCertificate(
      {
        serial: randomSerial(),
        issuer: this.intermediate.subjectDer,
        subject,
        notBefore,
        notAfter,
        publicKey,
        extensions: leafExtensions(
          req.profile,
          names,
          publicKey,
          issuerKeyId,
          false,
          revocationUrls(this.config.url).leaf,
        ),
      },
      this.signingKey(),
    );
    const certificate = parseCertificate(der);
    const record: InventoryRecord = {
      serial: certificate.serialHex,
      profile: req.profile,
      subject: formatDn(certificate.subject),
      issuer: formatDn(certificate.issuer),
      sans: [
        ...names.dns.map((d) => `DNS:${d}`),
        ...names.ip.map((i) => `IP:${i}`),
        ...names.email.map((e) => `email:${e}`),
        ...names.uri.map((u) => `URI:${u}`),
      ],
      spiffeId: names.uri[0] ?? null,
      notBefore,
      notAfter,
      fingerprint256: certificate.fingerprint256,
      status: 'valid',
      issuedAt: now,
      der,
    };
    const issued: Issued = {
      certificate,
      chainPem: encodePem('CERTIFICATE', der) + this.intermediatePem,
      record,
      ...(privateKey ? { privateKey } : {}),
    };
    await this.store.add(record, publish ? () => publish(issued) : undefined, add);
    return issued;
  }

  /**
   * Revokes a certificate this CA issued (by serial, or the certificate itself) and publishes the new CRLs in the
   * same step (issue 14): the inventory changes only if the CRL files are written, and the reverse. An unknown,
   * already revoked or foreign certificate is refused (NOT_REVOCABLE) and nothing changes.
   */
  async revoke(
    target: string | Certificate,
    opts: { reason?: RevocationReason; at?: Date; now?: Date } = {},
  ): Promise<InventoryRecord> {
    const now = opts.now ?? new Date();
    const at = opts.at ?? now;
    if (at.getTime() > now.getTime() + 5 * 60_000)
      throw new MtlsError('USAGE', `--at ${at.toISOString()} is in the future; a revocation time has passed`);
    let serial: string;
    if (typeof target === 'string') {
      serial = target.replace(/:/g, '').toLowerCase();
      if (!/^[0-9a-f]{1,40}$/.test(serial))
        throw new MtlsError('USAGE', `'${target}' is neither a serial number (hex) nor a certificate file`);
    } else {
      const foreign = foreignCertificate(target, this.intermediate);
      if (foreign) throw new MtlsError('NOT_REVOCABLE', foreign);
      serial = target.serialHex;
    }
    // The files are renamed into place inside the transaction, before it commits: a failure to write them rolls
    // the revocation back; a crash between the renames and the commit publishes a revocation the inventory lacks
    // (the safe side; 'mtls revoke' again records it).
    const record = await this.store.revoke(
      serial,
      opts.reason ?? 'unspecified',
      at,
      (p) => stageCrls(this.home, this.crlSigners(), p, now).commit(),
      now,
    );
    this.markRevocations();
    return record;
  }

  /**
   * Replaces HOME/crl/.revoked once a revocation has committed: an OCSP responder on this home (its native cache)
   * compares it at each request, so the next answer is the new one. Not being able to write it costs only time:
   * the responder also polls the inventory (every 100 ms).
   */
  private markRevocations(): void {
    try {
      writeFileAtomic(crlPaths(this.home).revoked, `${new Date().toISOString()}\n`, 0o644);
    } catch {
      // the poll covers it
    }
  }

  /** What the root's published CRL needs of its operator (the root key, often offline), in one line, or undefined. */
  rootCrlNotice(now = new Date()): string | undefined {
    return rootCrlNotice(this.home, this.root, now);
  }

  /** Publishes fresh CRLs (`mtls ca crl`): the revoked, unexpired certificates, a new CRL number. */
  async publishCrl(opts: { lifetimeMs?: number; now?: Date } = {}): Promise<string> {
    const now = opts.now ?? new Date();
    await this.store.publishCrl(now, (p) => {
      stageCrls(this.home, this.crlSigners(), p, now, opts.lifetimeMs).commit();
    });
    this.markRevocations();
    return crlPaths(this.home).pem;
  }

  private crlSigners(): CrlSigners {
    return {
      root: this.root,
      intermediate: this.intermediate,
      intermediateKey: this.signingKey(),
      rootKey: () => this.rootSigningKey(),
    };
  }

  /** The root's key when it is in the home (`ca init` suggests moving it offline): undefined when it is not. */
  rootSigningKey(): KeyObject | undefined {
    const file = caPaths(this.home).rootKey;
    if (!fs.existsSync(file)) return undefined;
    return loadPrivateKey(fs.readFileSync(file), `CA key ${file}`, this.passphrase);
  }
}

/**
 * The CA home holds the CA keys and the inventory: refused when other users could change anything in it (the
 * directory or a key) or read a key. `ca init` creates it 0700 with 0600 keys.
 */
function checkCaHome(home: string): void {
  const st = fs.statSync(home);
  if (st.mode & 0o022) {
    throw new MtlsError(
      'BAD_INPUT',
      `CA home ${home} can be changed by other users (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); ` +
        `run chmod 700 ${home}`,
    );
  }
  const p = caPaths(home);
  for (const key of [p.rootKey, p.intermediateKey]) checkPrivateFile(key, 'CA key');
}

function pemFileDer(file: string): Buffer {
  return decodeCertificatesPem(fs.readFileSync(file, 'utf8'), `${file} (the CA home is damaged)`)[0]!;
}
