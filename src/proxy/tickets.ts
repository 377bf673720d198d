import crypto from 'node:crypto';
import type { Credentials } from '../tls/credentials.js';

/**
 * Session ticket keys (48 bytes: name, HMAC and AES keys) derived from a secret and the trust bundle. Every
 * worker of a cluster holds the same secret, so a ticket issued by one worker resumes on any other; a new
 * trust bundle gives new keys, so sessions verified under the old trust cannot be resumed.
 */
export function ticketKeysFor(secret: Buffer): (c: Credentials) => Buffer {
  return (c) => Buffer.from(crypto.hkdfSync('sha256', secret, crypto.createHash('sha256').update(c.ca).digest(), 'mtlskit session ticket keys', 48));
}
