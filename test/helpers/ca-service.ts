/**
 * A CA service for tests (issue 15): `mtls ca serve` as a real process on a CA made an hour ago (so that a test can
 * issue certificates that have already expired), and calls to its API.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { exchange } from '../../src/io/http-exchange.js';
import { makeToken, provisionerKey, tokenAudience } from '../../src/ca/tokens.js';
import { checkLeafNames } from '../../src/pki/profiles.js';
import { parseDuration } from '../../src/text/duration.js';
import { subjectAltNameExt } from '../../src/pki/extensions.js';
import { createCsr } from '../../src/pki/csr.js';
import { buildName } from '../../src/pki/names.js';
import { exportPrivateKey, generateKeyPair } from '../../src/pki/keys.js';
import { OID } from '../../src/pki/oid.js';
import { encodePem } from '../../src/pki/pem.js';
import { loadCredentials } from '../../src/tls/credentials.js';
import { clientTlsOptions } from '../../src/tls/options.js';
import { freePort } from './endpoints.js';
import { BIN, mtls, openssl, tempDir } from './pki.js';
import { startProcess } from './process.js';

export interface Ca {
  home: string;
  dir: string;
  env: NodeJS.ProcessEnv;
  url: string;
  root: string;
  rootFile: string;
  fingerprint: string;
  stop: () => void;
  restart: () => Promise<void>;
  /** What the service wrote to stderr (its log), for a failure message. */
  log: () => string;
}

export async function startCa(name: string, extra: string[] = [], home?: string): Promise<Ca> {
  const dir = tempDir('mtls-service-');
  const caHome = home ?? path.join(dir, 'ca');
  const env = { MTLS_HOME: caHome };
  // Made an hour ago, so that a test can issue certificates that have already expired.
  if (!home)
    await (
      await CertificateAuthority.init({
        home: caHome,
        name,
        trustDomain: 'svc.example',
        now: new Date(Date.now() - 3600e3),
      })
    ).close();
  const port = await freePort();
  const args = [BIN, 'ca', 'serve', '--listen', `127.0.0.1:${port}`, ...extra];
  let proc = await startProcess(process.execPath, args, /CA service on/, env);
  const root = fs.readFileSync(path.join(caHome, 'root.crt'), 'utf8');
  const rootFile = path.join(dir, 'root.crt');
  fs.writeFileSync(rootFile, root);
  const fingerprint = openssl(['x509', '-in', rootFile, '-noout', '-fingerprint', '-sha256'])
    .stdout.trim()
    .split('=')[1]!
    .replace(/:/g, '');
  return {
    home: caHome,
    dir,
    env,
    url: `https://127.0.0.1:${port}`,
    root,
    rootFile,
    fingerprint,
    stop: () => proc.child.kill('SIGKILL'),
    log: () => proc.output(),
    restart: async () => {
      proc.child.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 200));
      proc = await startProcess(process.execPath, args, /CA service on/, env);
    },
  };
}

export interface Answer {
  status: number;
  json: Record<string, unknown> & { error?: { code: string; message: string } };
}

/** One API call, verifying the service against the root; with `as`, over mTLS with that certificate. */
export async function api(
  ca: Ca,
  route: string,
  o: { body?: unknown; as?: { cert: string; key: string }; raw?: Buffer; type?: string } = {},
): Promise<Answer> {
  const creds = o.as ? loadCredentials({ ...o.as, ca: ca.root }) : undefined;
  const body = o.raw ?? (o.body === undefined ? undefined : Buffer.from(JSON.stringify(o.body)));
  const a = await exchange(new URL(route, ca.url), {
    method: body ? 'POST' : 'GET',
    headers: body ? { 'content-type': o.type ?? 'application/json', 'content-length': body.length } : {},
    ...(body ? { body } : {}),
    timeoutMs: 10_000,
    maxBytes: 1 << 20,
    tls: clientTlsOptions(creds, ca.root),
  });
  let json = {};
  try {
    json = JSON.parse(a.body.toString('utf8')) as Record<string, unknown>;
  } catch {
    // not JSON: left empty, the status tells
  }
  return { status: a.status, json };
}

/** A CSR for a new key, asking for `dns` names (none: the grant's names are used). */
export function csr(cn: string, dns: string[] = []): { csr: string; key: string } {
  const { privateKey } = generateKeyPair('ec-p256');
  const subject = buildName([{ oid: OID.commonName, value: cn }]);
  const exts = dns.length ? [subjectAltNameExt({ dns }, false)] : [];
  return {
    csr: encodePem('CERTIFICATE REQUEST', createCsr(privateKey, subject, exts)),
    key: exportPrivateKey(privateKey),
  };
}

export const token = (ca: Ca, args: string[]) => {
  const r = mtls(['ca', 'token', ...args], { env: ca.env });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
};

/** A token made in-process with the CA's provisioner key (what `mtls ca token` prints, without a process each). */
export async function quickToken(ca: Ca, name: string, validityMs = 24 * 3600e3): Promise<string> {
  return makeToken(provisionerKey(ca.home, true), tokenAudience(ca.fingerprint), {
    name,
    profile: 'spiffe',
    names: checkLeafNames('spiffe', { spiffeId: `spiffe://svc.example/${name}` }),
    validityMs,
  });
}

/** Enrolls `name` with a fresh token through the API; returns its certificate chain and key. */
export async function enroll(
  ca: Ca,
  name: string,
  validity = '24h',
): Promise<{ cert: string; key: string; serial: string }> {
  const t = await quickToken(ca, name, parseDuration(validity));
  const c = csr(name);
  const a = await api(ca, '/v1/sign', { body: { csr: c.csr, token: t } });
  assert.equal(a.status, 201, JSON.stringify(a.json));
  return { cert: a.json['certificate'] as string, key: c.key, serial: a.json['serial'] as string };
}
