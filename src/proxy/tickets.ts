import crypto from 'node:crypto';

/**
 * Session ticket keys (48 bytes: name, HMAC and AES keys) derived from a secret and the digest of what peer
 * verification depends on (trust bundle, CRLs). Every worker of a cluster holds the same secret, so a ticket
 * issued by one worker resumes on any other; new trust gives new keys, so sessions verified under the old
 * trust cannot be resumed.
 */
export function ticketKeysFor(secret: Buffer): (trustDigest: Buffer) => Buffer {
  return (trust) => Buffer.from(crypto.hkdfSync('sha256', secret, trust, 'mtlskit session ticket keys', 48));
}
