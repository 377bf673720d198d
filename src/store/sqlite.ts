import Database from 'better-sqlite3';
import { MtlsError } from '../errors.js';
import { crashPoint } from '../io/files.js';
import type { Profile } from '../pki/profiles.js';
import type { CertificateStatus, CertificateStore, InventoryRecord, ListFilter } from './store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS certificates (
  serial TEXT PRIMARY KEY,
  profile TEXT NOT NULL,
  subject TEXT NOT NULL,
  issuer TEXT NOT NULL,
  sans TEXT NOT NULL,
  spiffe_id TEXT,
  not_before INTEGER NOT NULL,
  not_after INTEGER NOT NULL,
  fingerprint_sha256 TEXT NOT NULL UNIQUE,
  status TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
  issued_at INTEGER NOT NULL,
  der BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
PRAGMA user_version = 1;
`;

interface Row {
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
}

function fromRow(r: Row): InventoryRecord {
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
  };
}

/** The embedded inventory: one SQLite file in the CA home, WAL mode, writes in transactions. */
export class SqliteStore implements CertificateStore {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;
  private readonly remove: Database.Statement;

  constructor(path: string, options: { create?: boolean } = {}) {
    try {
      this.db = new Database(path, { fileMustExist: !options.create });
      this.db.pragma('journal_mode = WAL');
      // A CA must not lose a record of an issued certificate, even on power loss.
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
      this.db.exec(SCHEMA);
    } catch (err) {
      throw new MtlsError(
        'STORE',
        `cannot open the CA inventory ${path} (${(err as Error).message}); check the CA home and its permissions`,
        { cause: err },
      );
    }
    this.remove = this.db.prepare('DELETE FROM certificates WHERE serial = ?');
    this.insert = this.db.prepare(`INSERT INTO certificates
      (serial, profile, subject, issuer, sans, spiffe_id, not_before, not_after, fingerprint_sha256, status, issued_at, der)
      VALUES (@serial, @profile, @subject, @issuer, @sans, @spiffeId, @notBefore, @notAfter, @fingerprint256, @status, @issuedAt, @der)`);
  }

  async add(record: InventoryRecord, publish?: () => void | Promise<void>): Promise<void> {
    const params = {
      ...record,
      sans: JSON.stringify(record.sans),
      notBefore: record.notBefore.getTime(),
      notAfter: record.notAfter.getTime(),
      issuedAt: record.issuedAt.getTime(),
    };
    // Recorded (and synced) before anything leaves the CA: a crash at any later point leaves a certificate that the
    // inventory knows, perhaps one whose files were never written, never the reverse.
    try {
      this.insert.run(params);
    } catch (err) {
      throw new MtlsError(
        'STORE',
        `could not record certificate ${record.serial} in the inventory (${(err as Error).message})`,
        { cause: err },
      );
    }
    crashPoint('after-record');
    if (!publish) return;
    try {
      await publish();
    } catch (err) {
      // Publishing failed cleanly (its temporary files are gone): the certificate never left, so the record goes.
      this.remove.run(record.serial);
      throw err;
    }
  }

  async get(serial: string): Promise<InventoryRecord | undefined> {
    const row = this.db.prepare('SELECT * FROM certificates WHERE serial = ?').get(serial.toLowerCase()) as
      Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  async list(filter: ListFilter = {}): Promise<InventoryRecord[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.notAfterBefore) {
      where.push('not_after < ?');
      args.push(filter.notAfterBefore.getTime());
    }
    if (filter.profile) {
      where.push('profile = ?');
      args.push(filter.profile);
    }
    const sql =
      `SELECT * FROM certificates ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ` +
      `ORDER BY not_after, serial`;
    return (this.db.prepare(sql).all(...args) as Row[]).map(fromRow);
  }

  async count(): Promise<number> {
    return (this.db.prepare('SELECT count(*) AS n FROM certificates').get() as { n: number }).n;
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
