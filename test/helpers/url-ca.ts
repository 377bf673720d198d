import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { loadCredentials, type Credentials } from '../../src/tls/credentials.js';
import { freePort } from './endpoints.js';
import { BIN, mtls, openssl, tempDir } from './pki.js';
import { proxyArgs, startProcess } from './process.js';

/** A CA home made with `ca init --url` (its certificates name the CRL and OCSP URLs) and the files it issued. */
export interface UrlCa {
  dir: string;
  home: string;
  /** MTLS_HOME for the CLI. */
  env: { MTLS_HOME: string };
  /** The responder's base URL, `http://127.0.0.1:PORT`. */
  base: string;
  /** Its OCSP URL (what the certificates name). */
  ocspUrl: string;
  /** A file in the output directory (NAME.crt, NAME.key). */
  file(name: string): string;
  /** The CA bundle (HOME/ca.crt). */
  bundleFile: string;
  /** Its PEM. */
  bundle: string;
  creds(name: string): Credentials;
  /** Starts `mtls ca ocsp` on the base URL's port (it also serves the CRLs). */
  startResponder(): ReturnType<typeof startProcess>;
  /** `mtls revoke NAME.crt [--reason R]`, asserted to succeed. */
  revoke(name: string, reason?: string): void;
  /**
   * `mtls proxy server|client --listen 127.0.0.1:PORT --target TARGET --cert NAME.crt --key NAME.key --ca ca.crt`,
   * then `extra`: the arguments of a proxy with this CA's files.
   */
  proxyArgs(
    mode: 'server' | 'client',
    port: number | string,
    target: string,
    name: string,
    ...extra: string[]
  ): string[];
  /** `mtls serve --port PORT --cert NAME.crt --key NAME.key`, then `extra` (the CA home gives the bundle). */
  serveArgs(port: number | string, name: string, ...extra: string[]): string[];
}

/**
 * Makes a CA whose certificates point at a responder on a free loopback port, and issues `servers` (for localhost)
 * and `clients` into a temporary directory. The responder is not started: `startResponder()`.
 */
export async function urlCa(name: string, o: { servers?: string[]; clients?: string[] }): Promise<UrlCa> {
  const dir = tempDir(`mtls-${name.toLowerCase()}-`);
  const home = path.join(dir, 'ca');
  const env = { MTLS_HOME: home };
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const run = (args: string[]) => {
    const r = mtls(args, { env });
    assert.equal(r.status, 0, `mtls ${args.join(' ')}: ${r.stdout}${r.stderr}`);
  };
  run(['ca', 'init', '--name', name, '--url', base]);
  for (const s of o.servers ?? []) run(['issue', 'server', s, '--dns', 'localhost', '--out', dir]);
  for (const c of o.clients ?? []) run(['issue', 'client', c, '--out', dir]);
  const file = (n: string) => path.join(dir, n);
  const bundleFile = path.join(home, 'ca.crt');
  const creds = (n: string) =>
    loadCredentials({ certFile: file(`${n}.crt`), keyFile: file(`${n}.key`), caFile: bundleFile });
  return {
    dir,
    home,
    env,
    base,
    ocspUrl: `${base}/ocsp`,
    file,
    bundleFile,
    bundle: fs.readFileSync(bundleFile, 'utf8'),
    creds,
    startResponder: () =>
      startProcess(process.execPath, [BIN, 'ca', 'ocsp', '--listen', `127.0.0.1:${port}`], /OCSP responder on/, env),
    revoke: (n, reason) => run(['revoke', file(`${n}.crt`), ...(reason ? ['--reason', reason] : [])]),
    serveArgs: (port, n, ...extra) => [
      'serve',
      '--port',
      String(port),
      '--cert',
      file(`${n}.crt`),
      '--key',
      file(`${n}.key`),
      ...extra,
    ],
    proxyArgs: (mode, port, target, n, ...extra) => [
      'proxy',
      ...proxyArgs(mode, port, target, { cert: file(`${n}.crt`), key: file(`${n}.key`), ca: bundleFile }, ...extra),
    ],
  };
}

/** `openssl s_client -status` as `client` (chain sent) to 127.0.0.1:`port` with `version` (-tls1_2, -tls1_3): all it printed. */
export function sClientStatus(ca: UrlCa, port: number, client: string, version: string): string {
  const r = openssl(
    [
      's_client',
      '-connect',
      `127.0.0.1:${port}`,
      '-status',
      version,
      '-cert',
      ca.file(`${client}.crt`),
      '-key',
      ca.file(`${client}.key`),
      '-cert_chain',
      ca.file(`${client}.crt`),
      '-CAfile',
      ca.bundleFile,
    ],
    '',
  );
  return r.stdout + r.stderr;
}
