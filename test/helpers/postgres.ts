/**
 * PostgreSQL for the CA replica tests (issue 15). `.ci/run` starts a throwaway PostgreSQL 15 cluster and sets
 * MTLS_TEST_POSTGRES; by hand, start one and set it (see README, "Tests"):
 *   PGBIN=/usr/lib/postgresql/15/bin; D=$(mktemp -d); chown postgres $D
 *   su postgres -c "$PGBIN/initdb -D $D -A trust -U postgres && $PGBIN/pg_ctl -D $D -o '-p 55432 -k /tmp' -w start"
 *   export MTLS_TEST_POSTGRES=postgres://postgres@127.0.0.1:55432/postgres
 */
import crypto from 'node:crypto';
import pg from 'pg';

const URL_VAR = 'MTLS_TEST_POSTGRES';

/** For `{ skip: postgresMissing() }`: false when a server is given, else why not; under CI a missing one throws. */
export function postgresMissing(): string | false {
  if (process.env[URL_VAR]) return false;
  const why = `PostgreSQL is not running for the tests: start one and set ${URL_VAR} (see test/helpers/postgres.ts)`;
  if (process.env['CI'] || process.env['MTLS_REQUIRE_PEERS']) throw new Error(`${why}: required under CI`);
  return why;
}

/** A new, empty database on the test server; its URL. */
export async function freshDatabase(): Promise<string> {
  const base = process.env[URL_VAR]!;
  const name = `mtls_test_${crypto.randomBytes(6).toString('hex')}`;
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  try {
    await c.query(`CREATE DATABASE ${name}`);
  } finally {
    await c.end();
  }
  const u = new URL(base);
  u.pathname = `/${name}`;
  return u.toString();
}
