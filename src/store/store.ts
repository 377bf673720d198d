import type { RevocationReason } from '../pki/crl-writer.js';
import type { Profile } from '../pki/profiles.js';

export type CertificateStatus = 'valid' | 'revoked';

/** One issued certificate as the inventory keeps it. */
export interface InventoryRecord {
  /** Lower-case hex of the serial's INTEGER octets. */
  serial: string;
  profile: Profile;
  subject: string;
  issuer: string;
  /** SANs as `DNS:x`, `IP:x`, `email:x`, `URI:x`. */
  sans: string[];
  spiffeId: string | null;
  notBefore: Date;
  notAfter: Date;
  fingerprint256: string;
  status: CertificateStatus;
  issuedAt: Date;
  der: Buffer;
  /** Set when status is 'revoked'. */
  revokedAt?: Date;
  revocationReason?: RevocationReason;
  /** The serial of the certificate that renewed this one (POST /v1/renew). */
  supersededBy?: string;
}

/** What else a certificate's record commits with it (issue 15), in the same transaction. */
export interface AddOptions {
  /** An enrollment token spent by this issuance: a token already spent refuses it (TOKEN_SPENT), by constraint. */
  token?: { jti: string; expiresAt: Date };
  /** The serial this certificate renews: recorded as superseded by it. */
  supersedes?: string;
}

export interface ListFilter {
  /** Only certificates whose notAfter is before this time (expired ones included). */
  notAfterBefore?: Date;
  /** Only certificates whose notAfter is after this time (not yet expired then). */
  notAfterAfter?: Date;
  profile?: Profile;
  status?: CertificateStatus;
  /** Only this identity: the SPIFFE ID, or the subject's CN. */
  identity?: string;
  /** Pagination: the records after this one in the list's order (notAfter, serial). */
  after?: { notAfter: Date; serial: string };
  limit?: number;
}

/** What a CRL lists of a revoked certificate (read without the rest of its record: 100,000 of them per CRL). */
export interface RevokedEntry {
  serial: string;
  revokedAt: Date;
  reason: RevocationReason;
}

/** What a CRL publication is made from, inside the store's transaction. */
export interface CrlPublication {
  /** The next CRL number (one more than the last publication's). */
  crlNumber: bigint;
  /** The revocation being recorded (revoke); absent for a plain publication (`mtls ca crl`). */
  added?: RevokedEntry;
  /** How many revoked, unexpired certificates the CRL must list (`added` included). */
  count: number;
  /** Those certificates, read on demand: 100,000 rows cost about 0.3 s, which a revocation mostly avoids. */
  entries(): RevokedEntry[];
}

/**
 * The CA inventory. Implementations: sqlite.ts (embedded default); a PostgreSQL store later. `add` commits the
 * record, then runs `publish` (writing the files): a crash leaves a record whose files may be missing, never a
 * certificate the CA does not know; a `publish` that fails (cleanly) removes the record again.
 */
export interface CertificateStore {
  add(record: InventoryRecord, publish?: () => void | Promise<void>, opts?: AddOptions): Promise<void>;
  get(serial: string): Promise<InventoryRecord | undefined>;
  /** What an OCSP answer needs of a certificate (status, and when and why it was revoked), read cheaply. */
  statusOf(serial: string): Promise<Pick<InventoryRecord, 'status' | 'revokedAt' | 'revocationReason'> | undefined>;
  /**
   * The number of the last CRL published (0: none yet). Every revocation publishes, in its own transaction, so a
   * cache of statuses is out of date as soon as this moves (the native OCSP front polls it).
   */
  revocationMark(): Promise<number>;
  list(filter?: ListFilter): Promise<InventoryRecord[]>;
  count(): Promise<number>;
  /**
   * Marks a valid certificate revoked as of `at` and, in the same transaction, runs `publish` with the CA's revoked
   * certificates that have not expired by `now` (the publication's time; `at` may be earlier: --at) (the new one
   * included, also as `added`) and the next CRL number; when `publish` throws, nothing changed. Refuses
   * (NOT_REVOCABLE) a certificate already revoked or unknown.
   */
  revoke(
    serial: string,
    reason: RevocationReason,
    at: Date,
    publish: (p: CrlPublication) => void,
    now?: Date,
  ): Promise<InventoryRecord>;
  /** Runs `publish` with the revoked, unexpired certificates and the next CRL number, in one transaction. */
  publishCrl(at: Date, publish: (p: CrlPublication) => void): Promise<void>;
  close(): Promise<void>;
}
