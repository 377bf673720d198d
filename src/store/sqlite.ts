import Database from 'better-sqlite3';
import { MtlsError } from '../errors.js';
import { crashPoint } from '../io/files.js';
import type { RevocationReason } from '../pki/crl-writer.js';
import {
  fromRow,
  listQuery,
  notRevocable,
  recordParams,
  revokedEntry,
  statements,
  statusFromRow,
  tokenSpent,
  type Row,
} from './rows.js';

const SQL = statements(() => '?');
import type {
  AddOptions,
  CertificateStore,
  CrlPublication,
  InventoryRecord,
  ListFilter,
  RevokedEntry,
} from './store.js';

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
  der BLOB NOT NULL,
  revoked_at INTEGER,
  revocation_reason TEXT,
  superseded_by TEXT
);
CREATE INDEX IF NOT EXISTS certificates_not_after ON certificates (not_after);
CREATE INDEX IF NOT EXISTS certificates_revoked ON certificates (not_after) WHERE status = 'revoked';
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (
  jti TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL,
  spent_at INTEGER NOT NULL,
  serial TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_identity ON certificates (spiffe_id);
`;
/** Inventories made before the CA service (user_version 2) get its column; the tokens table is new. */
const MIGRATE_TO_3 = `
ALTER TABLE certificates ADD COLUMN superseded_by TEXT;
`;
/** Inventories made before revocation (user_version 1) get its columns. */
const MIGRATE_TO_2 = `
ALTER TABLE certificates ADD COLUMN revoked_at INTEGER;
ALTER TABLE certificates ADD COLUMN revocation_reason TEXT;
`;

/** The embedded inventory: one SQLite file in the CA home, WAL mode, writes in transactions. */
export class SqliteStore implements CertificateStore {
  private readonly db: Database.Database;
  private readonly insert: Database.Statement;
  private readonly remove: Database.Statement;
  private bySerial: Database.Statement | undefined;
  private statusBySerial: Database.Statement | undefined;

  constructor(path: string, options: { create?: boolean } = {}) {
    try {
      this.db = new Database(path, { fileMustExist: !options.create });
      this.db.pragma('journal_mode = WAL');
      // A CA must not lose a record of an issued certificate, even on power loss.
      this.db.pragma('synchronous = FULL');
      this.db.pragma('busy_timeout = 5000');
      const version = this.db.pragma('user_version', { simple: true }) as number;
      const fresh = !(this.db.prepare("SELECT 1 FROM sqlite_master WHERE name = 'certificates'").get() as unknown);
      if (!fresh && version < 2) this.db.exec(MIGRATE_TO_2);
      if (!fresh && version < 3) this.db.exec(MIGRATE_TO_3);
      this.db.exec(SCHEMA);
      this.db.pragma('user_version = 3');
    } catch (err) {
      throw new MtlsError(
        'STORE',
        `cannot open the CA inventory ${path} (${(err as Error).message}); check the CA home and its permissions`,
        { cause: err },
      );
    }
    this.remove = this.db.prepare(SQL.deleteCertificate);
    this.insert = this.db.prepare(`INSERT INTO certificates
      (serial, profile, subject, issuer, sans, spiffe_id, not_before, not_after, fingerprint_sha256, status, issued_at, der)
      VALUES (@serial, @profile, @subject, @issuer, @sans, @spiffeId, @notBefore, @notAfter, @fingerprint256, @status, @issuedAt, @der)`);
  }

  async add(record: InventoryRecord, publish?: () => void | Promise<void>, opts: AddOptions = {}): Promise<void> {
    const params = recordParams(record);
    // Recorded (and synced) before anything leaves the CA: a crash at any later point leaves a certificate that the
    // inventory knows, perhaps one whose files were never written, never the reverse.
    const spend = opts.token;
    try {
      this.db
        .transaction(() => {
          if (spend) {
            // Expired tokens cannot be presented again (their signature says so): their rows may go.
            this.db.prepare(SQL.forgetExpiredTokens).run(Date.now() - 86400e3);
            const spent = this.db
              .prepare(SQL.spendToken)
              .run(spend.jti, spend.expiresAt.getTime(), Date.now(), record.serial).changes;
            if (spent !== 1) throw tokenSpent();
          }
          this.insert.run(params);
          if (opts.supersedes) this.db.prepare(SQL.supersede).run(record.serial, opts.supersedes);
        })
        .immediate();
    } catch (err) {
      if (err instanceof MtlsError) throw err;
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
      // Publishing failed cleanly (its temporary files are gone): the certificate never left, so the record goes
      // (and the token it spent, and the mark on the certificate it renewed).
      this.db
        .transaction(() => {
          this.remove.run(record.serial);
          this.db.prepare(SQL.unspendToken).run(record.serial);
          this.db.prepare(SQL.unsupersede).run(record.serial);
        })
        .immediate();
      throw err;
    }
  }

  async get(serial: string): Promise<InventoryRecord | undefined> {
    // Prepared once: the OCSP responder asks at every request, and preparing cost a third of a lookup.
    this.bySerial ??= this.db.prepare(SQL.bySerial);
    const row = this.bySerial.get(serial.toLowerCase()) as Row | undefined;
    return row ? fromRow(row) : undefined;
  }

  async statusOf(
    serial: string,
  ): Promise<Pick<InventoryRecord, 'status' | 'revokedAt' | 'revocationReason'> | undefined> {
    this.statusBySerial ??= this.db.prepare(SQL.statusBySerial);
    const r = this.statusBySerial.get(serial.toLowerCase()) as
      Pick<Row, 'status' | 'revoked_at' | 'revocation_reason'> | undefined;
    if (!r) return undefined;
    return statusFromRow(r);
  }

  async list(filter: ListFilter = {}): Promise<InventoryRecord[]> {
    const { sql, args } = listQuery(filter, () => '?');
    return (this.db.prepare(sql).all(...args) as Row[]).map(fromRow);
  }

  /** The number of the last CRL published (0: none yet). */
  crlNumber(): number {
    const row = this.db.prepare("SELECT value FROM counters WHERE name = 'crl_number'").get() as
      { value: number } | undefined;
    return row?.value ?? 0;
  }

  async revocationMark(): Promise<number> {
    return this.crlNumber();
  }

  async count(): Promise<number> {
    return (this.db.prepare(SQL.count).get() as { n: number }).n;
  }

  async revoke(
    serial: string,
    reason: RevocationReason,
    at: Date,
    publish: (p: CrlPublication) => void,
    now = at,
  ): Promise<InventoryRecord> {
    return this.db
      .transaction(() => {
        const changed = this.db.prepare(SQL.revoke).run(at.getTime(), reason, serial.toLowerCase()).changes;
        if (changed !== 1) {
          const row = this.db.prepare(SQL.statusBySerial).get(serial.toLowerCase());
          throw notRevocable(serial, !!row);
        }
        this.publishIn(now, publish, { serial: serial.toLowerCase(), revokedAt: at, reason });
        return fromRow(this.db.prepare(SQL.bySerial).get(serial.toLowerCase()) as Row);
      })
      .immediate();
  }

  async publishCrl(at: Date, publish: (p: CrlPublication) => void): Promise<void> {
    this.db.transaction(() => this.publishIn(at, publish)).immediate();
  }

  /** Inside a transaction: the next CRL number, then `publish` (which may throw to roll everything back). */
  private publishIn(at: Date, publish: (p: CrlPublication) => void, added?: RevokedEntry): void {
    const row = this.db.prepare("SELECT value FROM counters WHERE name = 'crl_number'").get() as
      { value: number } | undefined;
    const next = (row?.value ?? 0) + 1;
    this.db.prepare("INSERT OR REPLACE INTO counters (name, value) VALUES ('crl_number', ?)").run(next);
    const count = (this.db.prepare(SQL.revokedCount).get(at.getTime()) as { n: number }).n;
    // 100,000 rows: raw arrays from the driver (no object per row there), one entry each.
    const entries = () =>
      (this.db.prepare(SQL.revokedEntries).raw().all(at.getTime()) as [string, number | null, string | null][]).map(
        ([serial, revoked_at, revocation_reason]) => revokedEntry({ serial, revoked_at, revocation_reason }, at),
      );
    publish({ crlNumber: BigInt(next), count, entries, ...(added ? { added } : {}) });
  }

  async close(): Promise<void> {
    this.db.close();
  }
}
