import pg from 'pg';
import { MtlsError } from '../errors.js';
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

const SQL = statements((i) => `$${i}`);
import type {
  AddOptions,
  CertificateStore,
  CrlPublication,
  InventoryRecord,
  ListFilter,
  RevokedEntry,
} from './store.js';

/**
 * The inventory on PostgreSQL (issue 15), for CA replicas (`mtls ca serve --store postgres://...`) that share one
 * database: the same tables as the SQLite store, migrated at start-up. Serials and token ids are unique by
 * constraint; a token is spent in the transaction that records its certificate; CRL publications are serialized
 * by the row lock of the CRL number (no session-level advisory lock: those break under connection poolers; the
 * migration takes a transaction-level one).
 */

/** Migrations, in order; `mtls_schema` records how many have run. */
const MIGRATIONS = [
  `CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    subject TEXT NOT NULL,
    issuer TEXT NOT NULL,
    sans TEXT NOT NULL,
    spiffe_id TEXT,
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL CHECK (status IN ('valid', 'revoked')),
    issued_at BIGINT NOT NULL,
    der BYTEA NOT NULL,
    revoked_at BIGINT,
    revocation_reason TEXT,
    superseded_by TEXT
  );
  CREATE INDEX certificates_not_after ON certificates (not_after, serial);
  CREATE INDEX certificates_revoked ON certificates (not_after) WHERE status = 'revoked';
  CREATE INDEX certificates_identity ON certificates (spiffe_id);
  CREATE TABLE counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
  CREATE TABLE tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    spent_at BIGINT NOT NULL,
    serial TEXT NOT NULL
  );`,
];
/** The transaction-level advisory lock key the migrations take ('mtls' in ASCII). */
const MIGRATION_LOCK = 0x6d746c73;

const COLUMNS =
  'serial, profile, subject, issuer, sans, spiffe_id, not_before, not_after, fingerprint_sha256, status, issued_at, der';

/** BIGINT as a JS number (ms since the epoch fit), not the string pg returns by default. */
const types = {
  getTypeParser: (oid: number, format?: string) =>
    oid === 20 ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format as 'text'),
};

/** Thrown by CrlPublication.entries() inside the first try: the publication is retried with the entries loaded. */
class EntriesNeeded extends Error {}

export class PostgresStore implements CertificateStore {
  private constructor(private readonly pool: pg.Pool) {}

  /**
   * Connects and migrates; a database that cannot be reached is one clear line (STORE). `seed`: what an empty
   * inventory starts with (the CA home's SQLite inventory, when a CA moves to PostgreSQL), copied in the migration's
   * transaction, so that replicas starting together copy it once.
   */
  static async connect(
    url: string,
    seed?: () => Promise<{ records: InventoryRecord[]; crlNumber: number }>,
  ): Promise<PostgresStore> {
    const pool = new pg.Pool({ connectionString: url, max: 10, types, connectionTimeoutMillis: 10_000 });
    pool.on('error', () => {
      // An idle client lost its connection: the pool replaces it; the next query reports a lasting failure.
    });
    const store = new PostgresStore(pool);
    try {
      await store.tx(async (c) => {
        await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
        await c.query('CREATE TABLE IF NOT EXISTS mtls_schema (version INTEGER NOT NULL)');
        const r = await c.query<{ version: number }>('SELECT version FROM mtls_schema');
        const version = r.rows[0]?.version ?? 0;
        if (version > MIGRATIONS.length)
          throw new MtlsError(
            'STORE',
            `the inventory database is of a newer mtlskit (schema ${version}, this one knows ${MIGRATIONS.length}); upgrade mtlskit`,
          );
        for (const m of MIGRATIONS.slice(version)) await c.query(m);
        if (r.rows.length === 0) await c.query('INSERT INTO mtls_schema (version) VALUES ($1)', [MIGRATIONS.length]);
        else await c.query('UPDATE mtls_schema SET version = $1', [MIGRATIONS.length]);
        const empty = (await c.query('SELECT 1 FROM certificates LIMIT 1')).rows.length === 0;
        if (empty && seed) {
          const { records, crlNumber } = await seed();
          for (const rec of records) await insertRecord(c, rec);
          if (crlNumber > 0) await c.query("INSERT INTO counters (name, value) VALUES ('crl_number', $1)", [crlNumber]);
        }
      });
    } catch (err) {
      await pool.end();
      throw storeError(err, `cannot open the inventory at ${redact(url)}`);
    }
    return store;
  }

  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query('BEGIN');
      const out = await fn(c);
      await c.query('COMMIT');
      return out;
    } catch (err) {
      await c.query('ROLLBACK').catch(() => {});
      throw err;
    } finally {
      c.release();
    }
  }

  async add(record: InventoryRecord, publish?: () => void | Promise<void>, opts: AddOptions = {}): Promise<void> {
    try {
      await this.tx(async (c) => {
        if (opts.token) {
          await c.query(SQL.forgetExpiredTokens, [Date.now() - 86400e3]);
          const spent = await c.query(SQL.spendToken, [
            opts.token.jti,
            opts.token.expiresAt.getTime(),
            Date.now(),
            record.serial,
          ]);
          if (spent.rowCount !== 1) throw tokenSpent();
        }
        await insertRecord(c, record);
        if (opts.supersedes) await c.query(SQL.supersede, [record.serial, opts.supersedes]);
      });
    } catch (err) {
      if (err instanceof MtlsError) throw err;
      throw storeError(err, `could not record certificate ${record.serial} in the inventory`);
    }
    if (!publish) return;
    try {
      await publish();
    } catch (err) {
      await this.tx(async (c) => {
        await c.query(SQL.deleteCertificate, [record.serial]);
        await c.query(SQL.unspendToken, [record.serial]);
        await c.query(SQL.unsupersede, [record.serial]);
      });
      throw err;
    }
  }

  async get(serial: string): Promise<InventoryRecord | undefined> {
    const r = await this.query<Row>(SQL.bySerial, [serial.toLowerCase()]);
    return r.rows[0] ? fromRow(r.rows[0]) : undefined;
  }

  async statusOf(
    serial: string,
  ): Promise<Pick<InventoryRecord, 'status' | 'revokedAt' | 'revocationReason'> | undefined> {
    const r = await this.query<Pick<Row, 'status' | 'revoked_at' | 'revocation_reason'>>(SQL.statusBySerial, [
      serial.toLowerCase(),
    ]);
    const row = r.rows[0];
    if (!row) return undefined;
    return statusFromRow(row);
  }

  async revocationMark(): Promise<number> {
    const r = await this.query<{ value: string }>("SELECT value FROM counters WHERE name = 'crl_number'", []);
    return Number(r.rows[0]?.value ?? 0);
  }

  async list(filter: ListFilter = {}): Promise<InventoryRecord[]> {
    const { sql, args } = listQuery(filter, (i) => `$${i}`);
    return (await this.query<Row>(sql, args)).rows.map(fromRow);
  }

  async count(): Promise<number> {
    return Number((await this.query<{ n: string }>(SQL.count)).rows[0]!.n);
  }

  async revoke(
    serial: string,
    reason: RevocationReason,
    at: Date,
    publish: (p: CrlPublication) => void,
    now = at,
  ): Promise<InventoryRecord> {
    const s = serial.toLowerCase();
    return this.tx(async (c) => {
      const changed = await c.query(SQL.revoke, [at.getTime(), reason, s]);
      if (changed.rowCount !== 1) {
        const row = await c.query(SQL.statusBySerial, [s]);
        throw notRevocable(serial, row.rows.length > 0);
      }
      await this.publishIn(c, now, publish, { serial: s, revokedAt: at, reason });
      return fromRow((await c.query<Row>(SQL.bySerial, [s])).rows[0]!);
    });
  }

  async publishCrl(at: Date, publish: (p: CrlPublication) => void): Promise<void> {
    await this.tx((c) => this.publishIn(c, at, publish));
  }

  /**
   * Inside a transaction: the next CRL number (its row stays locked until the commit, so publications through
   * any replica happen one at a time, each after the last), then `publish`. The entries are read only if the
   * publication asks for them (a revocation usually appends to the last CRL instead).
   */
  private async publishIn(
    c: pg.PoolClient,
    at: Date,
    publish: (p: CrlPublication) => void,
    added?: RevokedEntry,
  ): Promise<void> {
    const n = await c.query<{ value: number }>(
      "INSERT INTO counters (name, value) VALUES ('crl_number', 1) ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
    );
    const count = await c.query<{ n: string }>(SQL.revokedCount, [at.getTime()]);
    const base = { crlNumber: BigInt(n.rows[0]!.value), count: Number(count.rows[0]!.n), ...(added ? { added } : {}) };
    try {
      publish({
        ...base,
        entries: () => {
          throw new EntriesNeeded();
        },
      });
    } catch (err) {
      if (!(err instanceof EntriesNeeded)) throw err;
      const rows = await c.query<{ serial: string; revoked_at: number | null; revocation_reason: string | null }>(
        SQL.revokedEntries,
        [at.getTime()],
      );
      const entries = rows.rows.map((r) => revokedEntry(r, at));
      publish({ ...base, entries: () => entries });
    }
  }

  private async query<T extends pg.QueryResultRow>(sql: string, args: unknown[] = []): Promise<pg.QueryResult<T>> {
    try {
      return await this.pool.query<T>(sql, args);
    } catch (err) {
      throw storeError(err, 'the inventory database failed');
    }
  }

  async close(): Promise<void> {
    await this.pool.end();
  }
}

async function insertRecord(c: pg.PoolClient, record: InventoryRecord): Promise<void> {
  const p = recordParams(record);
  await c.query(
    `INSERT INTO certificates (${COLUMNS}, revoked_at, revocation_reason, superseded_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
    [
      p.serial,
      p.profile,
      p.subject,
      p.issuer,
      p.sans,
      p.spiffeId,
      p.notBefore,
      p.notAfter,
      p.fingerprint256,
      p.status,
      p.issuedAt,
      p.der,
      record.revokedAt?.getTime() ?? null,
      record.revocationReason ?? null,
      record.supersededBy ?? null,
    ],
  );
}

function storeError(err: unknown, what: string): MtlsError {
  if (err instanceof MtlsError) return err;
  return new MtlsError('STORE', `${what} (${(err as Error).message}); check --store and that PostgreSQL is running`, {
    cause: err,
  });
}

/** The URL without its password, for messages. */
function redact(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return 'the --store URL';
  }
}
