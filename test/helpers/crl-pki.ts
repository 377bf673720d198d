import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { OID } from '../../src/pki/oid.js';
import { keyPem, makeCert, opensslCrl, tempDir, writePem, type TestCert } from './pki.js';

/**
 * A two-level PKI as our CA makes it, for revocation tests: the bundle holds the root only; clients and the server
 * send the intermediate. `crls(revoked)` writes the intermediate's CRL (revoking `revoked`) and the root's, in one
 * file, which is what Node requires and what users write.
 */
export interface CrlPki {
  dir: string;
  root: TestCert;
  inter: TestCert;
  alice: TestCert;
  bob: TestCert;
  server: TestCert;
  files: { ca: string; cert: string; key: string };
  crls: (revoked: TestCert[], out?: string) => string;
  clientContext: (c: TestCert) => tls.SecureContext;
}

export function crlPki(): CrlPki {
  const dir = tempDir('mtls-crl-');
  const root = makeCert({ cn: 'CRL Root', ca: true });
  const inter = makeCert({ cn: 'CRL Issuing', ca: true, issuer: root, pathLen: 0 });
  const alice = makeCert({ cn: 'alice', issuer: inter, eku: [OID.clientAuth], uri: ['spiffe://crl.example/alice'] });
  const bob = makeCert({ cn: 'bob', issuer: inter, eku: [OID.clientAuth], uri: ['spiffe://crl.example/bob'] });
  const server = makeCert({ cn: 'server', issuer: inter, eku: [OID.serverAuth], dns: ['localhost'] });
  const files = {
    ca: writePem(dir, 'root.pem', [root]),
    cert: writePem(dir, 'server.pem', [server, inter]),
    key: path.join(dir, 'server.key'),
  };
  fs.writeFileSync(files.key, keyPem(server), { mode: 0o600 });
  const crls = (revoked: TestCert[], out = path.join(tempDir('mtls-crls-'), 'crls.pem')) => {
    const text =
      fs.readFileSync(opensslCrl(inter, revoked)).toString() + fs.readFileSync(opensslCrl(root, [])).toString();
    fs.writeFileSync(`${out}.tmp`, text);
    fs.renameSync(`${out}.tmp`, out);
    return out;
  };
  const clientContext = (c: TestCert) =>
    tls.createSecureContext({ cert: c.pem + inter.pem, key: keyPem(c), ca: root.pem });
  return { dir, root, inter, alice, bob, server, files, crls, clientContext };
}
