import fs from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { stageFiles } from '../io/files.js';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { readCrls } from '../pki/crl.js';
import {
  authorityKeyIdExt,
  basicConstraintsExt,
  extKeyUsageExt,
  keyIdentifier,
  keyUsageExt,
  subjectKeyIdExt,
} from '../pki/extensions.js';
import { exportPrivateKey, generateKeyPair, loadPrivateKey } from '../pki/keys.js';
import { buildName } from '../pki/names.js';
import type { CertStatus } from '../pki/ocsp.js';
import { OID } from '../pki/oid.js';
import { decodeCertificatesPem, encodePem } from '../pki/pem.js';
import { randomSerial, signCertificate, wholeSeconds } from '../pki/signing.js';
import { crlPaths } from './revocation.js';
import { DAY } from './init.js';

/** A responder certificate and its key. */
export interface Signer {
  cert: Certificate;
  key: KeyObject;
}

/**
 * A delegated OCSP responder certificate (RFC 6960 4.2.2.2) issued by `issuer`: id-kp-OCSPSigning,
 * id-pkix-ocsp-nocheck (clients do not ask for its own status), digitalSignature, a new P-256 key; valid from five
 * minutes ago for `lifetimeMs`, never past the issuer.
 */
export function issueResponderCertificate(
  issuer: Certificate,
  issuerKey: KeyObject,
  lifetimeMs: number,
  now: Date,
  commonName: string,
): Signer {
  const { privateKey, publicKey } = generateKeyPair('ec-p256');
  const start = wholeSeconds(now);
  const der = signCertificate(
    {
      serial: randomSerial(),
      issuer: issuer.subjectDer,
      subject: buildName([{ oid: OID.commonName, value: commonName }]),
      notBefore: new Date(start.getTime() - 5 * 60e3),
      notAfter: new Date(Math.min(start.getTime() + lifetimeMs, issuer.notAfter.getTime())),
      publicKey,
      extensions: [
        basicConstraintsExt(false),
        keyUsageExt(['digitalSignature']),
        extKeyUsageExt([OID.ocspSigning]),
        { oid: '1.3.6.1.5.5.7.48.1.5', critical: false, value: Buffer.from([0x05, 0x00]) },
        subjectKeyIdExt(keyIdentifier(publicKey)),
        authorityKeyIdExt(issuer.subjectKeyId ?? keyIdentifier(issuer.publicKey!)),
      ],
    },
    issuerKey,
  );
  return { cert: parseCertificate(der), key: privateKey };
}

/** Writes a responder's key (0600) and certificate (0644) in place of the old ones, both or neither. */
export function writeSigner(dir: string, files: { cert: string; key: string }, s: Signer): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  stageFiles(
    [
      { path: files.key, data: exportPrivateKey(s.key), mode: 0o600 },
      { path: files.cert, data: encodePem('CERTIFICATE', s.cert.der), mode: 0o644 },
    ],
    { overwrite: true },
  ).commit();
}

/** The responder of `files`, when both files read and the certificate is `issuer`'s; else undefined. */
export function readSigner(files: { cert: string; key: string }, issuer: Certificate): Signer | undefined {
  try {
    const cert = parseCertificate(decodeCertificatesPem(fs.readFileSync(files.cert, 'latin1'), files.cert)[0]!);
    if (!cert.issuerDer.equals(issuer.subjectDer)) return undefined;
    return { cert, key: loadPrivateKey(fs.readFileSync(files.key), files.key) };
  } catch {
    return undefined;
  }
}

const ROOT_RESPONDER_LIFETIME_MS = 30 * DAY;
const ROOT_RESPONDER_RENEW_MS = 10 * DAY;

/**
 * Answers for the root's certificates (the intermediate), signed by a responder certificate the root issues
 * (HOME/ocsp/root-responder.{crt,key}, 30 days). The root key is needed only to issue it, and is often kept offline
 * (`ca init` says so): a responder certificate made while it was at hand is used until it expires, renewed when the
 * root key is back and less than 10 days are left. Without one, the root's certificates are `unauthorized`.
 *
 * Not in the inventory, which holds the intermediate's certificates (and feeds the intermediate's CRL); the status
 * of the intermediate is what the root's published CRL says (HOME/crl/root.crl).
 */
export class RootResponder {
  private signer?: Signer;
  private crl?: { key: string; revoked: Set<string>; thisUpdate: Date };

  constructor(
    private readonly ca: {
      home: string;
      root: Certificate;
      intermediate: Certificate;
      rootSigningKey?(): KeyObject | undefined;
    },
  ) {}

  private get files() {
    const dir = path.join(this.ca.home, 'ocsp');
    return { dir, cert: path.join(dir, 'root-responder.crt'), key: path.join(dir, 'root-responder.key') };
  }

  /** The root's responder now, issued or renewed when the root key is at hand; undefined when there is none. */
  signerNow(now: Date): Signer | undefined {
    const live = (s: Signer | undefined, margin: number) =>
      s && s.cert.notBefore.getTime() <= now.getTime() && s.cert.notAfter.getTime() - now.getTime() > margin
        ? s
        : undefined;
    if (live(this.signer, ROOT_RESPONDER_RENEW_MS)) return this.signer;
    const onDisk = readSigner(this.files, this.ca.root);
    if (live(onDisk, ROOT_RESPONDER_RENEW_MS)) return (this.signer = onDisk);
    const rootKey = this.ca.rootSigningKey?.();
    if (!rootKey) return (this.signer = live(onDisk, 0)); // offline root: what is left of the last one
    const s = issueResponderCertificate(
      this.ca.root,
      rootKey,
      ROOT_RESPONDER_LIFETIME_MS,
      now,
      'OCSP responder (root)',
    );
    writeSigner(this.files.dir, this.files, s);
    return (this.signer = s);
  }

  /** The status of a certificate the root issued: the intermediate is good unless the root's CRL lists it. */
  statusOf(serialHex: string): CertStatus {
    if (serialHex !== this.ca.intermediate.serialHex) return { status: 'unknown' };
    const file = crlPaths(this.ca.home).root;
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(file);
    } catch {
      return { status: 'good' }; // no root CRL published: nothing revoked by the root
    }
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    if (this.crl?.key !== key) {
      const crl = readCrls(fs.readFileSync(file), file)[0]!;
      this.crl = { key, revoked: crl.revoked, thisUpdate: crl.thisUpdate };
    }
    // A CRL entry's own time is not kept by the CRL reader: the CRL's thisUpdate is when it was known at the latest.
    return this.crl.revoked.has(serialHex)
      ? { status: 'revoked', at: this.crl.thisUpdate, reason: 'unspecified' }
      : { status: 'good' };
  }
}
