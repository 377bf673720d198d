import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MtlsError } from '../errors.js';
import { readCertificates, type Certificate } from '../pki/certificate.js';
import { encodePem } from '../pki/pem.js';
import { MAX_INPUT, readInput, writeFileAtomic } from '../io/files.js';

/**
 * `mtls ca install` / `uninstall`, as mkcert and `step certificate install` do: the CA home's root goes into the
 * system trust store (Debian's update-ca-certificates, which curl, wget and OpenSSL read), the NSS databases that
 * Chromium and Firefox use (with certutil, when it is installed), and a NODE_EXTRA_CA_CERTS line for Node.
 */
export interface TrustStoreOptions {
  /** Debian's directory for local roots. Default /usr/local/share/ca-certificates. */
  systemDir?: string;
  /** NSS databases to update. Default: ~/.pki/nssdb (Chromium) and every Firefox profile, where they exist. */
  nssDbs?: string[];
  /** Skip the system store or NSS. */
  system?: boolean;
  nss?: boolean;
}

export interface TrustStoreReport {
  /** What happened in the system store: 'installed', 'removed', 'already installed', 'not installed', or why skipped. */
  system: string;
  nss: { db: string; result: string }[];
  /** For Node (it reads neither store): the line to put in the environment. */
  nodeLine: string;
}

const SYSTEM_DIR = '/usr/local/share/ca-certificates';

function rootOf(bundle: string): Certificate {
  const [root] = readCertificates(readInput(bundle, 'CA bundle', MAX_INPUT.bundle), bundle);
  return root!;
}

/** The file and nickname of a root: stable per root, so install is idempotent and uninstall finds it. */
function names(root: Certificate): { file: string; nickname: string } {
  const fp = root.fingerprint256.replace(/:/g, '').slice(0, 16).toLowerCase();
  const cn = root.subject.find((a) => a.oid === '2.5.4.3')?.value ?? 'root';
  return { file: `mtlskit-${fp}.crt`, nickname: `mtlskit ${cn.replace(/[^\w .-]/g, '_')} ${fp.slice(0, 8)}` };
}

function run(cmd: string, args: string[]): { ok: boolean; out: string; missing: boolean } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 60_000 });
  const missing = (r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
  return {
    ok: r.status === 0,
    out: `${r.stdout ?? ''}${r.stderr ?? ''}`.trim().split('\n').slice(-1)[0] ?? '',
    missing,
  };
}

function defaultNssDbs(): string[] {
  const home = os.homedir();
  const dbs = [path.join(home, '.pki', 'nssdb')];
  const ff = path.join(home, '.mozilla', 'firefox');
  if (fs.existsSync(ff)) for (const p of fs.readdirSync(ff)) dbs.push(path.join(ff, p));
  return dbs.filter((d) => fs.existsSync(path.join(d, 'cert9.db')));
}

function updateSystem(): void {
  const r = run('update-ca-certificates', []);
  if (r.missing)
    throw new MtlsError(
      'UNSUPPORTED',
      'update-ca-certificates is not installed (apt-get install ca-certificates); use --no-system',
    );
  if (!r.ok) throw new MtlsError('IO', `update-ca-certificates failed: ${r.out}`);
}

function systemStep(dir: string, file: string, pem: string, install: boolean): string {
  const target = path.join(dir, file);
  try {
    if (install) {
      if (fs.existsSync(target) && fs.readFileSync(target, 'utf8') === pem) return 'already installed';
      fs.mkdirSync(dir, { recursive: true });
      writeFileAtomic(target, pem, 0o644);
    } else {
      if (!fs.existsSync(target)) return 'not installed';
      fs.rmSync(target);
    }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') {
      throw new MtlsError(
        'IO',
        `cannot write ${dir} (${code}): the system trust store needs root; run with sudo, or use --no-system`,
      );
    }
    throw err;
  }
  updateSystem();
  return install ? `installed (${target})` : `removed (${target})`;
}

function nssStep(db: string, nickname: string, bundle: string, install: boolean): string {
  const d = `sql:${db}`;
  const present = run('certutil', ['-L', '-d', d, '-n', nickname]);
  if (present.missing) return 'skipped: certutil is not installed (apt-get install libnss3-tools)';
  if (install) {
    if (present.ok) return 'already installed';
    const r = run('certutil', ['-A', '-d', d, '-t', 'C,,', '-n', nickname, '-i', bundle]);
    return r.ok ? 'installed' : `failed: ${r.out}`;
  }
  if (!present.ok) return 'not installed';
  const r = run('certutil', ['-D', '-d', d, '-n', nickname]);
  return r.ok ? 'removed' : `failed: ${r.out}`;
}

/** Installs (or, with `install` false, removes) the root of the CA bundle `bundle` in the trust stores. */
export function trustRoot(bundle: string, install: boolean, o: TrustStoreOptions = {}): TrustStoreReport {
  const root = rootOf(bundle);
  const pem = encodePem('CERTIFICATE', root.der);
  const { file, nickname } = names(root);
  const system =
    o.system === false ? 'skipped (--no-system)' : systemStep(o.systemDir ?? SYSTEM_DIR, file, pem, install);
  const nss =
    o.nss === false
      ? []
      : (o.nssDbs ?? defaultNssDbs()).map((db) => ({ db, result: nssStep(db, nickname, bundle, install) }));
  return {
    system,
    nss,
    nodeLine: install ? `export NODE_EXTRA_CA_CERTS=${path.resolve(bundle)}` : 'unset NODE_EXTRA_CA_CERTS',
  };
}
