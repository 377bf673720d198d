import fs from 'node:fs';
import path from 'node:path';
import type { KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { fileIdentity, fileRange, MAX_INPUT, stageFiles, withIdentifiedFile, type FileOctets } from '../io/files.js';
import type { Certificate } from '../pki/certificate.js';
import { parseCrl, type Crl } from '../pki/crl.js';
import {
  appendedEntries,
  encodeCrl,
  REVOCATION_REASONS,
  signCrlParts,
  type CrlEntry,
  type RevocationReason,
} from '../pki/crl-writer.js';
import { keyIdentifier } from '../pki/extensions.js';
import { sameDn } from '../pki/name-match.js';
import { formatDn } from '../pki/names.js';
import { sliceParts, type Part } from '../pki/octets.js';
import { encodePem, encodePemReusing, pemLength } from '../pki/pem.js';
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
    /** crl.pem's identity once published (fileIdentity): its lines are reused only while it is that file. */
    pemStat: path.join(dir, '.crl.pem.stat'),
    intermediate: path.join(dir, 'intermediate.crl'),
    root: path.join(dir, 'root.crl'),
    /**
     * Replaced (a new file) after each revocation or publication commits: a cache of OCSP answers on this home is
     * good only while this file is as it was (native/answers.cc).
     */
    revoked: path.join(dir, '.revoked'),
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
  const reading = new Reading();
  try {
    return stageWith(reading, home, signers, p, at, lifetimeMs);
  } finally {
    reading.close(); // the staged files are written and synced: commit only renames them
  }
}

function stageWith(
  reading: Reading,
  home: string,
  signers: CrlSigners,
  p: CrlPublication,
  at: Date,
  lifetimeMs: number,
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
  // (its number, issuer and entry count agree with the inventory): no reading of 100,000 rows, no re-encoding, no
  // copy of the 5 MB of entries, and the lines of crl.pem around them are reused; both files are read in pieces,
  // never whole. Expired entries drop out at the next full publication (mtls ca crl, due within the CRL's lifetime).
  const appended = p.added && readPrevious(reading, files.intermediate, template, p, entry(p.added));
  const intermediateCrl = appended
    ? signCrlParts(template, appended.entries, signers.intermediateKey)
    : [encodeCrl({ ...template, entries: p.entries().map(entry) }, signers.intermediateKey)];
  // The root's CRL: the published one while it has a month left; else a new one when the root key is at hand;
  // else (the key offline, as ca init suggests) the published one however old, or none: a revocation never waits
  // for the root key, and rootCrlNotice says what the root's CRL needs.
  const published = readRootCrl(files.root, signers.root);
  const current = published?.nextUpdate && published.nextUpdate.getTime() - at.getTime() > ROOT_CRL_RENEW_MS;
  const rootCrl = (current ? published.der : undefined) ?? newRootCrl(signers, p.crlNumber, at) ?? published?.der;
  const pem = [
    ...(rootCrl ? [Buffer.from(encodePem('X509 CRL', rootCrl))] : []),
    ...((appended && reusedPem(reading, files, appended, intermediateCrl)) ?? [
      Buffer.from(encodePem('X509 CRL', sliceParts(intermediateCrl, 0, Infinity))),
    ]),
  ];
  const rootChanged = rootCrl !== undefined && !published?.der.equals(rootCrl);
  fs.mkdirSync(files.dir, { recursive: true, mode: 0o755 });
  const staged = stageFiles(
    [
      { path: files.intermediate, data: intermediateCrl, mode: 0o644 },
      ...(rootChanged ? [{ path: files.root, data: rootCrl, mode: 0o644 }] : []),
      { path: files.pem, data: pem, mode: 0o644 },
    ],
    { overwrite: true },
  );
  return {
    abort: staged.abort,
    commit: () => {
      staged.commit();
      // Best effort, after the fact: a missing or stale record only costs the next revocation a full encoding.
      try {
        fs.writeFileSync(files.pemStat, `${withIdentifiedFile(files.pem, (f) => f.id)}\n`, { mode: 0o644 });
      } catch {
        // the next revocation encodes crl.pem in full
      }
    },
  };
}

/** Files opened to be read in pieces while a publication is staged, all closed once it is. */
class Reading {
  private readonly fds: number[] = [];
  /** All of `file`, read in pieces, and its descriptor; undefined if it cannot be opened or is over MAX_INPUT.crl. */
  open(file: string): { fd: number; octets: FileOctets } | undefined {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return undefined;
    }
    this.fds.push(fd);
    const st = fs.fstatSync(fd);
    return st.isFile() && st.size <= MAX_INPUT.crl ? { fd, octets: fileRange(fd, 0, st.size) } : undefined;
  }
  close(): void {
    for (const fd of this.fds.splice(0)) fs.closeSync(fd);
  }
}

interface Previous {
  /** The previous intermediate CRL, as published. */
  der: Part;
  /** Its entries with the new one appended, and where its entries start. */
  entries: Part[];
  offset: number;
}

/** The previous intermediate CRL's entries with `added` appended, if that file is the last publication. */
function readPrevious(
  reading: Reading,
  file: string,
  t: { issuerDer: Buffer; number: bigint },
  p: CrlPublication,
  added: CrlEntry,
): Previous | undefined {
  const der = reading.open(file)?.octets;
  if (!der) return undefined;
  const appended = appendedEntries(der, { issuerDer: t.issuerDer, number: t.number - 1n, count: p.count - 1 }, added);
  return appended && { der, ...appended };
}

/**
 * The intermediate's PEM block for `crl` (the previous CRL with an entry appended), reusing the lines of the
 * published crl.pem where the two CRLs have the same octets; undefined (encode it all) unless crl.pem is exactly
 * the file the last publication wrote (its recorded identity agrees) and the entries start at the same offset.
 */
function reusedPem(
  reading: Reading,
  files: ReturnType<typeof crlPaths>,
  previous: Previous,
  crl: Part[],
): Part[] | undefined {
  if (previous.offset < 0 || crl[0]!.length !== previous.offset) return undefined;
  let recorded: string;
  try {
    recorded = fs.readFileSync(files.pemStat, 'latin1');
  } catch {
    return undefined;
  }
  const pem = reading.open(files.pem);
  if (!pem || recorded !== `${fileIdentity(pem.fd)}\n`) return undefined;
  const text = pem.octets;
  // crl.pem is the root's block, then the intermediate's.
  const END = '-----END X509 CRL-----\n';
  const rootEnd = text.read(0, Math.min(text.length, 65_536)).indexOf(END);
  if (rootEnd < 0) return undefined;
  const block = text.range(rootEnd + END.length, text.length);
  if (block.length !== pemLength('X509 CRL', previous.der.length)) return undefined;
  const entries = previous.entries[0]!;
  return encodePemReusing('X509 CRL', crl, block, [previous.offset, previous.offset + entries.length]);
}

/** The published root CRL (the root's, as its name says), or undefined. */
function readRootCrl(file: string, root: Certificate): Crl | undefined {
  try {
    const crl = parseCrl(fs.readFileSync(file), file);
    return sameDn(crl.issuer, root.subject) ? crl : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What the root's published CRL needs of its operator, in one line, or undefined: it is missing, due within a
 * month or expired, and only the root key (often offline) signs a new one.
 */
export function rootCrlNotice(home: string, root: Certificate, at = new Date()): string | undefined {
  const crl = readRootCrl(crlPaths(home).root, root);
  const fix = `put root.key back in ${home}, run 'mtls ca crl', then move it offline again`;
  if (!crl) return `the root's CRL is not published: servers that need a CRL for every CA refuse crl.pem; ${fix}`;
  const left = (crl.nextUpdate?.getTime() ?? Infinity) - at.getTime();
  if (left <= 0)
    return `the root's CRL expired at ${crl.nextUpdate!.toISOString()}: servers with hard-fail CRLs refuse every client; ${fix}`;
  if (left <= ROOT_CRL_RENEW_MS)
    return `the root's CRL expires at ${crl.nextUpdate!.toISOString()} (in ${Math.ceil(left / DAY)} days); ${fix}`;
  return undefined;
}

/** A new root CRL, or undefined when the root key is not at hand. */
function newRootCrl(signers: CrlSigners, crlNumber: bigint, at: Date): Buffer | undefined {
  const key = signers.rootKey();
  if (!key) return undefined;
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
