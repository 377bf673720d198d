import fs from 'node:fs';
import path from 'node:path';
import { MtlsError } from '../errors.js';
import { exportPrivateKey } from '../pki/keys.js';
import { decodeCertificatesPem } from '../pki/pem.js';
import { buildPkcs12 } from '../pki/pkcs12.js';
import { stageFiles, type PendingFile } from '../io/files.js';
import type { InventoryRecord } from '../store/store.js';
import type { Issued } from './authority.js';

export interface OutputOptions {
  /** Directory for NAME.crt, NAME.key, NAME.p12 and a copy of ca.crt. */
  outDir: string;
  name: string;
  /** The trust bundle (root) PEM, copied to ca.crt in `outDir`. */
  bundlePem: string;
  /** Also write NAME.p12 protected by this password. */
  p12Password?: string;
  /** Encrypt NAME.key with this passphrase. */
  keyPassphrase?: string;
  overwrite?: boolean;
}

/** The files an issuance produces, in the order they are written. */
export function issuedFiles(issued: Issued, o: OutputOptions): PendingFile[] {
  const base = path.join(o.outDir, o.name);
  const files: PendingFile[] = [{ path: `${base}.crt`, data: issued.chainPem, mode: 0o644 }];
  if (issued.privateKey) {
    files.push({ path: `${base}.key`, data: exportPrivateKey(issued.privateKey, o.keyPassphrase), mode: 0o600 });
    if (o.p12Password !== undefined) {
      const chain = decodeCertificatesPem(issued.chainPem, 'issued chain');
      files.push({
        path: `${base}.p12`,
        data: buildPkcs12(issued.privateKey, chain, o.p12Password, { friendlyName: o.name }),
        mode: 0o600,
      });
    }
  } else if (o.p12Password !== undefined) {
    throw new MtlsError(
      'USAGE',
      '--p12 needs the private key, which a CSR does not carry; build the PKCS#12 where the key is',
    );
  }
  return files;
}

/** Stages every file, then renames them all into place (and ca.crt, replaced only if different). */
export function writeIssued(issued: Issued, o: OutputOptions): string[] {
  const files = issuedFiles(issued, o);
  try {
    fs.mkdirSync(o.outDir, { recursive: true });
  } catch (err) {
    throw new MtlsError(
      'IO',
      `cannot create --out directory ${o.outDir} (${(err as NodeJS.ErrnoException).code}); choose a writable directory`,
    );
  }
  const staged = stageFiles(files, { overwrite: o.overwrite ?? false });
  staged.commit();
  const bundle = path.join(o.outDir, 'ca.crt');
  stageFiles([{ path: bundle, data: o.bundlePem, mode: 0o644 }], { overwrite: true }).commit();
  return [...files.map((f) => f.path), bundle];
}

/**
 * An inventory record as `mtls ca list --json` and the CA service's API show it: times in ISO-8601, the status
 * `expired` for a valid certificate past its notAfter at `now`.
 */
export function recordView(r: InventoryRecord, now: Date) {
  return {
    serial: r.serial,
    profile: r.profile,
    subject: r.subject,
    sans: r.sans,
    spiffeId: r.spiffeId,
    notBefore: r.notBefore.toISOString(),
    notAfter: r.notAfter.toISOString(),
    fingerprint256: r.fingerprint256,
    status: r.status === 'revoked' ? 'revoked' : r.notAfter < now ? 'expired' : 'valid',
    ...(r.revokedAt ? { revokedAt: r.revokedAt.toISOString(), reason: r.revocationReason } : {}),
    ...(r.supersededBy ? { supersededBy: r.supersededBy } : {}),
  };
}
