import { MtlsError } from '../errors.js';
import type { RevocationReason } from '../pki/crl-writer.js';
import type { Profile } from '../pki/profiles.js';
import type { CertificateStatus, InventoryRecord, ListFilter, RevokedEntry } from './store.js';

/** The certificates table as both stores hold it (times in ms since the epoch). */
export interface Row {
  serial: string;
  profile: string;
  subject: string;
  issuer: string;
  sans: string;
  spiffe_id: string | null;
  not_before: number;
  not_after: number;
  fingerprint_sha256: string;
  status: string;
  issued_at: number;
  der: Buffer;
  revoked_at: number | null;
  revocation_reason: string | null;
  superseded_by: string | null;
}

export function fromRow(r: Row): InventoryRecord {
  return {
    serial: r.serial,
    profile: r.profile as Profile,
    subject: r.subject,
    issuer: r.issuer,
    sans: JSON.parse(r.sans) as string[],
    spiffeId: r.spiffe_id,
    notBefore: new Date(r.not_before),
    notAfter: new Date(r.not_after),
    fingerprint256: r.fingerprint_sha256,
    status: r.status as CertificateStatus,
    issuedAt: new Date(r.issued_at),
    der: r.der,
    ...(r.revoked_at !== null ? { revokedAt: new Date(r.revoked_at) } : {}),
    ...(r.revocation_reason !== null ? { revocationReason: r.revocation_reason as RevocationReason } : {}),
    ...(r.superseded_by ? { supersededBy: r.superseded_by } : {}),
  };
}

/** A record as the parameters of an INSERT (named as the columns' placeholders: @serial, or $1 by position). */
export function recordParams(record: InventoryRecord) {
  return {
    ...record,
    sans: JSON.stringify(record.sans),
    notBefore: record.notBefore.getTime(),
    notAfter: record.notAfter.getTime(),
    issuedAt: record.issuedAt.getTime(),
  };
}

/**
 * The SELECT for `filter`, with `mark(i)` writing the i-th placeholder (`?` for SQLite, `$i` for PostgreSQL).
 * Ordered by (not_after, serial), the order the API's cursor pages by.
 */
export function listQuery(filter: ListFilter, mark: (i: number) => string): { sql: string; args: unknown[] } {
  const where: string[] = [];
  const args: unknown[] = [];
  const p = (v: unknown) => {
    args.push(v);
    return mark(args.length);
  };
  if (filter.notAfterBefore) where.push(`not_after < ${p(filter.notAfterBefore.getTime())}`);
  if (filter.notAfterAfter) where.push(`not_after > ${p(filter.notAfterAfter.getTime())}`);
  if (filter.profile) where.push(`profile = ${p(filter.profile)}`);
  if (filter.status) where.push(`status = ${p(filter.status)}`);
  if (filter.identity) {
    const cn = filter.identity.replace(/[\\%_]/g, (c) => `\\${c}`);
    where.push(
      `(spiffe_id = ${p(filter.identity)} OR subject = ${p(`CN=${filter.identity}`)} OR subject LIKE ${p(`CN=${cn}, %`)} ESCAPE '\\')`,
    );
  }
  if (filter.after)
    where.push(`(not_after, serial) > (${p(filter.after.notAfter.getTime())}, ${p(filter.after.serial)})`);
  const sql =
    `SELECT * FROM certificates ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ` +
    `ORDER BY not_after, serial${filter.limit ? ` LIMIT ${Math.floor(filter.limit)}` : ''}`;
  return { sql, args };
}

/** What an OCSP answer needs of a row: its status, and when and why it was revoked. */
export function statusFromRow(
  r: Pick<Row, 'status' | 'revoked_at' | 'revocation_reason'>,
): Pick<InventoryRecord, 'status' | 'revokedAt' | 'revocationReason'> {
  return {
    status: r.status as CertificateStatus,
    ...(r.revoked_at !== null ? { revokedAt: new Date(r.revoked_at) } : {}),
    ...(r.revocation_reason !== null ? { revocationReason: r.revocation_reason as RevocationReason } : {}),
  };
}

/** The refusal of a token already spent (both stores detect it by the tokens table's primary key). */
export const tokenSpent = () =>
  new MtlsError('TOKEN_SPENT', 'this enrollment token was used before; make a new one with mtls ca token');

/** The refusal of a revocation that changed no row: the certificate is already revoked (`known`) or unknown. */
export const notRevocable = (serial: string, known: boolean) =>
  new MtlsError(
    'NOT_REVOCABLE',
    known
      ? `certificate ${serial} is already revoked; nothing changed`
      : `no certificate with serial ${serial} in this CA's inventory; check the serial with 'mtls ca list'`,
  );

/**
 * The statements both stores run, written once: `mark(i)` is the i-th placeholder (`?` for SQLite, `$i` for
 * PostgreSQL). What differs between them (upserts, migrations) stays in each store.
 */
export function statements(mark: (i: number) => string) {
  const [a, b, c, d] = [1, 2, 3, 4].map(mark);
  return {
    bySerial: `SELECT * FROM certificates WHERE serial = ${a}`,
    statusBySerial: `SELECT status, revoked_at, revocation_reason FROM certificates WHERE serial = ${a}`,
    count: 'SELECT count(*) AS n FROM certificates',
    deleteCertificate: `DELETE FROM certificates WHERE serial = ${a}`,
    /** Expired tokens cannot be presented again (their signature says so): their rows may go. */
    forgetExpiredTokens: `DELETE FROM tokens WHERE expires_at < ${a}`,
    /** Changes no row when the token was spent before: the primary key is what makes a token single-use. */
    spendToken: `INSERT INTO tokens (jti, expires_at, spent_at, serial) VALUES (${a}, ${b}, ${c}, ${d}) ON CONFLICT DO NOTHING`,
    unspendToken: `DELETE FROM tokens WHERE serial = ${a}`,
    supersede: `UPDATE certificates SET superseded_by = ${a} WHERE serial = ${b}`,
    unsupersede: `UPDATE certificates SET superseded_by = NULL WHERE superseded_by = ${a}`,
    revoke: `UPDATE certificates SET status = 'revoked', revoked_at = ${a}, revocation_reason = ${b} WHERE serial = ${c} AND status = 'valid'`,
    revokedCount: `SELECT count(*) AS n FROM certificates WHERE status = 'revoked' AND not_after > ${a}`,
    revokedEntries:
      `SELECT serial, revoked_at, revocation_reason FROM certificates WHERE status = 'revoked' AND not_after > ${a} ` +
      'ORDER BY revoked_at, serial',
  };
}

/** A revoked row as a CRL entry. */
export function revokedEntry(
  r: { serial: string; revoked_at: number | null; revocation_reason: string | null },
  at: Date,
): RevokedEntry {
  return {
    serial: r.serial,
    revokedAt: new Date(r.revoked_at ?? at.getTime()),
    reason: (r.revocation_reason ?? 'unspecified') as RevocationReason,
  };
}
