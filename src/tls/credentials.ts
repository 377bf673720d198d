import type { KeyObject } from 'node:crypto';
import { MtlsError } from '../errors.js';
import { readCertificates, type Certificate } from '../pki/certificate.js';
import { exportPrivateKey, keysMatch, loadPrivateKey } from '../pki/keys.js';
import { encodePem } from '../pki/pem.js';
import { checkPrivateFile, MAX_INPUT, readInput } from '../io/files.js';

/** Where credentials come from: files (watched for rotation) or memory. */
export type CredentialSource =
  | { certFile: string; keyFile: string; caFile: string; passphrase?: string }
  | { cert: string | Buffer; key: string | Buffer | KeyObject; ca: string | Buffer; passphrase?: string };

/** Checked credentials: the chain parses, the key matches the leaf, the trust bundle parses. */
export interface Credentials {
  /** PEM: leaf first, then intermediates. */
  cert: string;
  /** PKCS#8 PEM (unencrypted, in memory only). */
  key: string;
  /** PEM trust bundle. */
  ca: string;
  leaf: Certificate;
  chain: Certificate[];
  trustAnchors: Certificate[];
}

function read(file: string, what: string, max: number = MAX_INPUT.certificate): Buffer {
  return readInput(file, what, max);
}

/** Loads and checks credentials; every failure is one line naming the file. */
export function loadCredentials(src: CredentialSource): Credentials {
  const files = 'certFile' in src;
  const certWhat = files ? `certificate ${src.certFile}` : 'certificate';
  const keyWhat = files ? `key ${src.keyFile}` : 'key';
  const caWhat = files ? `CA bundle ${src.caFile}` : 'CA bundle';
  const certData = files ? read(src.certFile, 'certificate') : Buffer.from(src.cert);
  const caData = files ? read(src.caFile, 'CA bundle', MAX_INPUT.bundle) : Buffer.from(src.ca);
  const chain = readCertificates(certData, certWhat);
  const trustAnchors = readCertificates(caData, caWhat);
  if (files) checkPrivateFile(src.keyFile, 'key');
  const keySrc = files ? read(src.keyFile, 'key') : src.key;
  const key =
    typeof keySrc === 'object' && !Buffer.isBuffer(keySrc)
      ? keySrc
      : loadPrivateKey(keySrc as Buffer | string, keyWhat, src.passphrase);
  const leaf = chain[0]!;
  if (!leaf.publicKey || !keysMatch(key, leaf.publicKey)) {
    throw new MtlsError(
      'KEY_MISMATCH',
      `${keyWhat} does not belong to ${certWhat} ('${leaf.subject.at(-1)?.value ?? leaf.serialHex}'); ` +
        `pair each certificate with its own key`,
    );
  }
  return {
    cert: chain.map((c) => encodePem('CERTIFICATE', c.der)).join(''),
    key: exportPrivateKey(key),
    ca: trustAnchors.map((c) => encodePem('CERTIFICATE', c.der)).join(''),
    leaf,
    chain,
    trustAnchors,
  };
}
