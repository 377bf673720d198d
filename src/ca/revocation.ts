import fs from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { stageFiles } from '../io/files.js';
import type { Certificate } from '../pki/certificate.js';
import { parseCrl, type Crl } from '../pki/crl.js';
import {
  appendedEntries,
  encodeCrl,
  REVOCATION_REASONS,
  signCrl,
  type CrlEntry,
  type RevocationReason,
} from '../pki/crl-writer.js';
import { keyIdentifier } from '../pki/extensions.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn } from '../pki/names.js';
import { encodePem } from '../pki/pem.js';
import type { CrlPublication, RevokedEntry } from '../store/store.js';
import { DAY } from './init.js';

/**
 * The CA's published revocation data (issue 14), in HOME/crl/: `intermediate.crl` and `root.crl` (DER) and
 * `crl.pem` (the root's CRL, then the intermediate's), which works as it is with `--crl` in our servers and proxy,
 * Node's `crl` option and `openssl verify -crl_check_all`. All three are written together or not at all.
 */
export const crlPaths = (home: string) => {
  const dir = path.join(home, 'crl');
  return {
    dir,
    pem: path.join(dir, 'crl.pem'),
    intermediate: path.join(dir, 'intermediate.crl'),
    root: path.join(dir, 'root.crl'),
  };
};

/** Default lifetime of the intermediate's CRL (`mtls ca crl --next-update`); the root's lives a year. */
export const CRL_LIFETIME_MS = DAY;
const ROOT_CRL_LIFETIME_MS = 365 * DAY;
/** The root's CRL is signed again when less than this is left of it (and the root key is at hand). */
const ROOT_CRL_RENEW_MS = 30 * DAY;

export function parseReason(text: string | undefined): RevocationReason {
  if (text === undefined) return 'unspecified';
  if (text in REVOCATION_REASONS) return text as RevocationReason;
  throw new MtlsError(
    'USAGE',
    `--reason '${text}' is not a revocation reason; use one of ${Object.keys(REVOCATION_REASONS).join(', ')}`,
  );
}

export interface CrlSigners {
  root: Certificate;
  intermediate: Certificate;
  intermediateKey: KeyObject;
  /** undefined when the root key is offline: the published root CRL is kept while it is fresh. */
  rootKey: () => KeyObject | undefined;
}

/**
 * Builds the CRLs for `revoked` (the inventory's revoked, unexpired certificates) and stages the three files;
 * returns `commit`, run by the caller once the inventory change is certain to commit (inside its transaction).
 */
export function stageCrls(
  home: string,
  signers: CrlSigners,
  p: CrlPublication,
  at: Date,
  lifetimeMs = CRL_LIFETIME_MS,
): { commit: () => void; abort: () => void } {
  const files = crlPaths(home);
  const idOf = (c: Certificate) => c.subjectKeyId ?? keyIdentifier(c.publicKey!);
  const template = {
    issuerDer: signers.intermediate.subjectDer,
    issuerKeyId: idOf(signers.intermediate),
    thisUpdate: at,
    nextUpdate: new Date(at.getTime() + lifetimeMs),
    number: p.crlNumber,
  };
  const entry = (r: RevokedEntry) => ({
    serial: Buffer.from(r.serial, 'hex'),
    revokedAt: r.revokedAt,
    reason: r.reason,
  });
  // A revocation appends its entry to the CRL published last, when that file is exactly the last publication
  // (its number, issuer and entry count agree with the inventory): no reading of 100,000 rows, no re-encoding.
  // Expired entries drop out at the next full publication (mtls ca crl, due within the CRL's lifetime).
  const appended = p.added && readPrevious(files.intermediate, template, p, entry(p.added));
  const intermediateCrl = appended
    ? signCrl(template, appended, signers.intermediateKey)
    : encodeCrl({ ...template, entries: p.entries().map(entry) }, signers.intermediateKey);
  const rootCrl = currentRootCrl(files.root, signers.root, at) ?? signRootCrl(signers, p.crlNumber, at);
  fs.mkdirSync(files.dir, { recursive: true, mode: 0o755 });
  return stageFiles(
    [
      { path: files.intermediate, data: intermediateCrl, mode: 0o644 },
      { path: files.root, data: rootCrl, mode: 0o644 },
      {
        path: files.pem,
        data: encodePem('X509 CRL', rootCrl) + encodePem('X509 CRL', intermediateCrl),
        mode: 0o644,
      },
    ],
    { overwrite: true },
  );
}

/** The previous intermediate CRL's entries with `added` appended, if that file is the last publication. */
function readPrevious(
  file: string,
  t: { issuerDer: Buffer; number: bigint },
  p: CrlPublication,
  added: CrlEntry,
): Buffer | undefined {
  let previous: Buffer;
  try {
    previous = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  return appendedEntries(previous, { issuerDer: t.issuerDer, number: t.number - 1n, count: p.count - 1 }, added);
}

/** The published root CRL while it has more than ROOT_CRL_RENEW_MS left, else undefined. */
function currentRootCrl(file: string, root: Certificate, at: Date): Buffer | undefined {
  let crl: Crl;
  try {
    crl = parseCrl(fs.readFileSync(file), file);
  } catch {
    return undefined;
  }
  const fresh = crl.nextUpdate && crl.nextUpdate.getTime() - at.getTime() > ROOT_CRL_RENEW_MS;
  return fresh && sameDn(crl.issuer, root.subject) ? crl.der : undefined;
}

function signRootCrl(signers: CrlSigners, crlNumber: bigint, at: Date): Buffer {
  const key = signers.rootKey();
  if (!key)
    throw new MtlsError(
      'CA_NOT_FOUND',
      `the root's CRL must be signed again and the root key is not in the CA home; put root.key back for ` +
        `'mtls ca crl', then move it offline again`,
    );
  return encodeCrl(
    {
      issuerDer: signers.root.subjectDer,
      issuerKeyId: signers.root.subjectKeyId ?? keyIdentifier(signers.root.publicKey!),
      thisUpdate: at,
      nextUpdate: new Date(at.getTime() + ROOT_CRL_LIFETIME_MS),
      number: crlNumber,
      entries: [],
    },
    key,
  );
}

/** Why `cert` cannot be revoked by this CA (issued by another one), or undefined. */
export function foreignCertificate(cert: Certificate, intermediate: Certificate): string | undefined {
  const ours =
    sameDn(cert.issuer, intermediate.subject) &&
    (!cert.authorityKeyId || !intermediate.subjectKeyId || cert.authorityKeyId.equals(intermediate.subjectKeyId));
  return ours
    ? undefined
    : `the certificate serial ${cert.serialHex} was issued by '${formatDn(cert.issuer)}', not by this CA's ` +
        `'${formatDn(intermediate.subject)}'; revoke it at the CA that issued it`;
}
