import fs from 'node:fs';
import path from 'node:path';
import { MtlsError } from '../errors.js';
import { randomSerial, signCertificate, wholeSeconds } from '../pki/signing.js';
import { keyIdentifier, type NameConstraintsInput } from '../pki/extensions.js';
import { DEFAULT_KEY_TYPE, exportPrivateKey, generateKeyPair, parseKeyType, type KeyType } from '../pki/keys.js';
import { buildName, checkCidr, checkDnsName, checkTrustDomain, printable } from '../pki/names.js';
import { OID } from '../pki/oid.js';
import { encodePem } from '../pki/pem.js';
import { intermediateExtensions, revocationUrls, rootExtensions } from '../pki/profiles.js';
import { SqliteStore } from '../store/sqlite.js';
import { crashPoint, removeStale, stageFiles, type PendingFile } from '../io/files.js';
import { caPaths, type CaConfig } from './home.js';

export const DAY = 86400e3;

/** The host that closes a name type in a constrained CA's name constraints (RFC 6761 reserves it). */
export const CLOSED = 'invalid';

/** Backdating absorbs small clock skew between the CA and relying parties (as step-ca does). */
export const BACKDATE_MS = 60e3;

export interface InitOptions {
  home: string;
  /** Default `mtlskit CA`. */
  name?: string;
  /** Key type of the root and the intermediate. Default ec-p256. */
  keyType?: KeyType;
  trustDomain?: string;
  permitDns?: string[];
  /** CIDRs, e.g. 10.0.0.0/8. */
  permitIp?: string[];
  /** Encrypts both CA keys at rest (PKCS#8, PBES2 AES-256). */
  passphrase?: string;
  /** Default 10 years. */
  rootValidityMs?: number;
  /** Default 5 years. */
  intermediateValidityMs?: number;
  /**
   * Where the CA publishes revocation data (e.g. http://ca.internal:9080): certificates then carry a CRL
   * distribution point (BASE/crl/intermediate.crl, the intermediate BASE/crl/root.crl) and an OCSP URL (BASE/ocsp).
   */
  url?: string;
  now?: Date;
}

/** An http(s) base URL without query, fragment or credentials (it is copied into every certificate). */
export function checkBaseUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new MtlsError('BAD_INPUT', `--url '${printable(text)}' is not a URL; write it like http://ca.internal:9080`);
  }
  if (!['http:', 'https:'].includes(u.protocol) || u.search || u.hash || u.username || u.password || text.length > 200)
    throw new MtlsError(
      'BAD_INPUT',
      `--url '${printable(text)}' must be a plain http(s) URL without query, fragment or credentials (200 characters at most)`,
    );
  return u.href.replace(/\/+$/, '');
}

/** Creates a CA home: the root, the intermediate, the config and an empty inventory, all or nothing. */
export async function createCaHome(opts: InitOptions): Promise<void> {
  const p = caPaths(opts.home);
  if (fs.existsSync(p.config) || fs.existsSync(p.rootCert) || fs.existsSync(p.intermediateCert)) {
    throw new MtlsError('CA_EXISTS', `a CA already exists in ${opts.home}; use it, or choose another --home`);
  }
  if (fs.existsSync(opts.home) && fs.readdirSync(opts.home).length > 0) {
    throw new MtlsError('CA_EXISTS', `${opts.home} is not empty; choose an empty or new directory for the CA home`);
  }
  const now = wholeSeconds(opts.now ?? new Date());
  const keyType = parseKeyType(opts.keyType ?? DEFAULT_KEY_TYPE);
  const name = opts.name ?? 'mtlskit CA';
  if (name.length === 0 || name.length > 48)
    throw new MtlsError('BAD_NAME', "the CA name must be 1-48 characters (it becomes part of the CA certificates' CN)");
  const trustDomain = opts.trustDomain === undefined ? undefined : checkTrustDomain(opts.trustDomain);
  const permittedDns = (opts.permitDns ?? []).map((d) => checkDnsName(d.replace(/^\./, '')));
  const permittedIp = (opts.permitIp ?? []).map(checkCidr);
  const url = opts.url === undefined ? undefined : checkBaseUrl(opts.url);
  if (opts.passphrase !== undefined && opts.passphrase.length < 8) {
    throw new MtlsError('BAD_INPUT', 'the CA passphrase must be at least 8 characters');
  }
  // A trust domain constrains URIs only; DNS/IP permits make the CA a constrained one for host names.
  const constrained = permittedDns.length + permittedIp.length > 0;
  // Every other name type is shut too: IPs by excluding all of them (CA/Browser Forum practice); emails and URIs,
  // for which no subtree means "all", by permitting only the host 'invalid' (RFC 6761: never a real name).
  const constraints: NameConstraintsInput = {
    permittedDns,
    permittedIp,
    permittedUri: trustDomain ? [trustDomain] : constrained ? [CLOSED] : [],
    permittedEmail: constrained ? [CLOSED] : [],
    // CA/Browser Forum practice for constrained CAs: without permitted IP ranges, exclude all of them.
    excludedIp: constrained && permittedIp.length === 0 ? ['0.0.0.0/0', '::/0'] : [],
  };

  const rootKeys = generateKeyPair(keyType);
  const intKeys = generateKeyPair(keyType);
  const org = { oid: OID.organizationName, value: name };
  const rootName = buildName([org, { oid: OID.commonName, value: `${name} Root` }]);
  const intName = buildName([org, { oid: OID.commonName, value: `${name} Intermediate` }]);
  const rootDer = signCertificate(
    {
      serial: randomSerial(),
      issuer: rootName,
      subject: rootName,
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + (opts.rootValidityMs ?? 3650 * DAY)),
      publicKey: rootKeys.publicKey,
      extensions: rootExtensions(rootKeys.publicKey),
    },
    rootKeys.privateKey,
  );
  const intDer = signCertificate(
    {
      serial: randomSerial(),
      issuer: rootName,
      subject: intName,
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(
        now.getTime() + Math.min(opts.intermediateValidityMs ?? 1825 * DAY, opts.rootValidityMs ?? 3650 * DAY),
      ),
      publicKey: intKeys.publicKey,
      extensions: intermediateExtensions(
        intKeys.publicKey,
        keyIdentifier(rootKeys.publicKey),
        constraints,
        revocationUrls(url).intermediate,
      ),
    },
    rootKeys.privateKey,
  );

  const config: CaConfig = {
    version: 1,
    name,
    keyType,
    permittedDns,
    permittedIp,
    encrypted: opts.passphrase !== undefined,
    createdAt: now.toISOString(),
    ...(trustDomain ? { trustDomain } : {}),
    ...(url ? { url } : {}),
  };
  const parent = path.dirname(opts.home);
  try {
    fs.mkdirSync(parent, { recursive: true });
  } catch (err) {
    throw new MtlsError(
      'IO',
      `cannot create ${parent} (${(err as NodeJS.ErrnoException).code}); check the path and its permissions`,
    );
  }
  // A staging directory holds key material: one left by an init that was killed is removed here (by its name).
  removeStale(parent, (n) => n.startsWith(`.${path.basename(opts.home)}.init-`));
  let tmp: string;
  try {
    tmp = fs.mkdtempSync(path.join(parent, `.${path.basename(opts.home)}.init-`));
  } catch (err) {
    throw new MtlsError(
      'IO',
      `cannot write in ${parent} (${(err as NodeJS.ErrnoException).code}); choose a writable --home`,
    );
  }
  // Interrupted (Ctrl-C, SIGTERM) between here and the rename: the staging directory and its keys go first.
  const interrupted = (signal: NodeJS.Signals) => {
    fs.rmSync(tmp, { recursive: true, force: true });
    process.kill(process.pid, signal);
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  try {
    fs.chmodSync(tmp, 0o700);
    const t = caPaths(tmp);
    const rootPem = encodePem('CERTIFICATE', rootDer);
    const files: PendingFile[] = [
      { path: t.config, data: JSON.stringify(config, null, 2) + '\n', mode: 0o644 },
      { path: t.rootCert, data: rootPem, mode: 0o644 },
      { path: t.bundle, data: rootPem, mode: 0o644 },
      { path: t.intermediateCert, data: encodePem('CERTIFICATE', intDer), mode: 0o644 },
      { path: t.rootKey, data: exportPrivateKey(rootKeys.privateKey, opts.passphrase), mode: 0o600 },
      { path: t.intermediateKey, data: exportPrivateKey(intKeys.privateKey, opts.passphrase), mode: 0o600 },
    ];
    stageFiles(files).commit();
    // (The test's signal may reach a busy machine's event loop late: it gets its full turn then.)
    const signalled = crashPoint('init-staged');
    await new SqliteStore(t.inventory, { create: true }).close();
    // A signal that came while we worked synchronously is read by the event loop's poll: give it that turn while
    // the keys are still in the staging directory (10 ms, once per CA).
    await new Promise((r) => setTimeout(r, signalled ? 5000 : 10));
    if (fs.existsSync(opts.home)) fs.rmdirSync(opts.home);
    fs.renameSync(tmp, opts.home);
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (err instanceof MtlsError) throw err;
    throw new MtlsError('IO', `cannot create the CA in ${opts.home} (${(err as Error).message}); check the directory`, {
      cause: err,
    });
  } finally {
    // Not at once: a signal still in flight would be dropped with the listener and Ctrl-C ignored.
    setTimeout(() => {
      process.off('SIGINT', interrupted);
      process.off('SIGTERM', interrupted);
    }, 50).unref();
  }
}
