import os from 'node:os';
import path from 'node:path';
import type { KeyType } from '../pki/keys.js';

/** Where the CA lives: `--home`, else `$MTLS_HOME`, else `~/.mtls`. */
export function resolveCaHome(home?: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(home ?? env['MTLS_HOME'] ?? path.join(os.homedir(), '.mtls'));
}

/** The files of a CA home. The root key can be moved offline after `ca init`; issuing needs only the intermediate. */
export function caPaths(home: string) {
  return {
    home,
    config: path.join(home, 'ca.json'),
    rootCert: path.join(home, 'root.crt'),
    rootKey: path.join(home, 'root.key'),
    intermediateCert: path.join(home, 'intermediate.crt'),
    intermediateKey: path.join(home, 'intermediate.key'),
    /** The trust bundle clients and servers use: the root certificate. */
    bundle: path.join(home, 'ca.crt'),
    inventory: path.join(home, 'inventory.db'),
    /** Where the inventory lives when it is not inventory.db: a postgres:// URL (0600; it may hold a password). */
    store: path.join(home, 'store.url'),
  };
}

/** The CA's settings, written once by `ca init`. */
export interface CaConfig {
  version: 1;
  name: string;
  keyType: KeyType;
  trustDomain?: string;
  /** DNS names (and their subdomains) the CA may issue for; empty means unconstrained. */
  permittedDns: string[];
  /** CIDR ranges the CA may issue IP SANs for; with permittedDns set and this empty, no IP SANs. */
  permittedIp: string[];
  encrypted: boolean;
  createdAt: string;
  /** `ca init --url`: where revocation data is published; absent, certificates carry no CRL or OCSP URL. */
  url?: string;
}
