import fs from 'node:fs';
import path from 'node:path';
import { stageFiles } from '../io/files.js';
import { readCertificates, type Certificate } from '../pki/certificate.js';
import { exportPrivateKey } from '../pki/keys.js';
import type { CertificateAuthority } from './authority.js';

/**
 * The service's own server certificate, in HOME/service/: reused while more than a third of its lifetime is left
 * and it carries `names`, else issued anew by the CA (and recorded in its inventory).
 */
export async function serviceCredentials(
  ca: CertificateAuthority,
  names: { dns: string[]; ip: string[] },
  validityMs: number,
): Promise<{ cert: string; key: string; leaf: Certificate }> {
  const dir = path.join(ca.home, 'service');
  const certFile = path.join(dir, 'service.crt');
  const keyFile = path.join(dir, 'service.key');
  try {
    const chain = readCertificates(fs.readFileSync(certFile), certFile);
    const leaf = chain[0]!;
    const left = leaf.notAfter.getTime() - Date.now();
    const same =
      JSON.stringify([...(leaf.san?.dns ?? [])].sort()) === JSON.stringify([...names.dns].sort()) &&
      JSON.stringify([...(leaf.san?.ip ?? [])].sort()) === JSON.stringify([...names.ip].sort());
    const record = await ca.store.get(leaf.serialHex);
    if (same && record?.status === 'valid' && left > (leaf.notAfter.getTime() - leaf.notBefore.getTime()) / 3)
      return { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8'), leaf };
  } catch {
    // none yet, or unreadable: issue one
  }
  const issued = await ca.issue({
    profile: 'server',
    name: 'ca-service',
    names,
    validityMs,
    clampToIssuer: true,
  });
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = exportPrivateKey(issued.privateKey!);
  stageFiles(
    [
      { path: keyFile, data: key, mode: 0o600 },
      { path: certFile, data: issued.chainPem, mode: 0o644 },
    ],
    { overwrite: true },
  ).commit();
  return { cert: issued.chainPem, key, leaf: issued.certificate };
}
