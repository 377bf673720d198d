import fs from 'node:fs';
import path from 'node:path';
import { MtlsError } from '../errors.js';
import { compilePolicy, type PolicyConfig } from '../identity/policy.js';
import { compileSpiffePattern } from '../pki/names.js';
import { checkCrlUrl, MAX_CRL_URLS } from '../tls/crl-fetch.js';

import { formatAddress, parseAddress, type Address } from '../io/address.js';
import { Reader, type Raw } from './config-reader.js';

export { formatAddress, parseAddress, type Address };

export interface Limits {
  /** A connection whose TLS handshake (and authorization) has not finished by then is cut. */
  handshakeTimeoutMs: number;
  /** No byte either way for this long: closed. */
  idleTimeoutMs: number;
  /** Connections beyond this are refused at accept. */
  maxConnections: number;
  /** Closed after this long however busy (0: no limit). */
  maxLifetimeMs: number;
  /** HTTP: the request head (line and headers) must arrive within this; else 408. */
  requestHeadTimeoutMs: number;
  /** HTTP: a request body that sends no byte for this long is cut; 408. */
  bodyIdleTimeoutMs: number;
  /** HTTP: the target must start its answer within this once the request is sent; else 504. */
  backendTimeoutMs: number;
  /** HTTP: requests of one identity waiting on the target at once; more get 503 (one caller cannot take the pool). */
  maxRequestsPerIdentity: number;
}

interface Common {
  name: string;
  listen: Address;
  cert: string;
  key: string;
  ca: string;
  keyPassphraseFile?: string;
  limits: Limits;
}

export interface ServerListenerConfig extends Common {
  mode: 'server';
  target: Address;
  protocol: 'tcp' | 'http';
  policy: PolicyConfig;
  /** TCP: send a PROXY v2 header with identity TLVs to the target. */
  proxyProtocol: boolean;
  /** TCP + PROXY: include the client's DER certificate as a TLV. */
  proxyProtocolCertificate: boolean;
  /** HTTP: also set RFC 9440 Client-Cert. */
  clientCertHeader: boolean;
  /** HTTP: include the URL-encoded PEM in XFCC (Cert=). */
  xfccCertificate: boolean;
  /** HTTP: merge runs of `/` in request paths before the route policy and the target see them. Default true. */
  mergeSlashes: boolean;
  /** Allow a target that is not loopback or a unix socket (plaintext leaves the machine). */
  unsafeTarget: boolean;
  /** Optional PEM CRL file(s) checked for every client (a CRL for every CA in the chain is required). */
  crl?: string;
  /**
   * CRLs fetched from these URLs instead (conditional GET every crlRefreshMs, default 30 s) into a private file of
   * the proxy's, which `crl` names once fetched (src/proxy/crl-urls.ts); a fetch that fails keeps the CRLs in force.
   */
  crlUrl?: string[];
  crlRefreshMs?: number;
  /**
   * When the CRLs in force pass their nextUpdate (no fresh file was published): admit clients that no CRL lists,
   * logged once per CRL and counted in mtls_proxy_crl_stale_admissions_total, instead of refusing everyone (the
   * default, hard-fail). A CRL file that is already stale when loaded is still refused.
   */
  crlSoftFail?: boolean;
  /** Staple our certificate's OCSP status (RFC 6066 8) from the responder it names, or from `stapleUrl`. */
  staple?: boolean;
  stapleUrl?: string;
  /**
   * Ask each client certificate's OCSP responder (the one it names, or `clientOcspUrl`) before admitting
   * it; no trustworthy answer refuses it unless `ocspSoftFail` (logged, counted in mtls_proxy_ocsp_unknown_total).
   */
  clientOcsp?: boolean;
  clientOcspUrl?: string;
  ocspSoftFail?: boolean;
  /**
   * TCP mode: who does the TLS and the relay. 'native' (the default for TCP when the addon is built): a thread of
   * our own with OpenSSL (native/); 'node': Node's TLS socket. HTTP mode is always 'node'.
   */
  engine: 'native' | 'node' | 'auto';
}

export interface ClientListenerConfig extends Common {
  mode: 'client';
  target: { host: string; port: number };
  /** Check the server's SPIFFE ID (pattern) instead of its DNS name. */
  expectSpiffeId?: string;
  servername?: string;
  /** Ask for the server's stapled OCSP status and check it; 'require' refuses a server that staples none. */
  staple?: 'request' | 'require';
  /** Allow a plaintext listener that is not on loopback or a unix socket. */
  unsafeListen: boolean;
}

export type ListenerConfig = ServerListenerConfig | ClientListenerConfig;

export interface ProxyConfig {
  listeners: ListenerConfig[];
  /** /metrics, /healthz, /readyz. */
  admin?: Address;
  /** Worker processes (cluster); 1 = no cluster. */
  workers: number;
  /** On SIGTERM: how long live connections may finish. */
  drainTimeoutMs: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

export const DEFAULT_LIMITS: Limits = {
  handshakeTimeoutMs: 10_000,
  idleTimeoutMs: 300_000,
  maxConnections: 10_000,
  maxLifetimeMs: 0,
  requestHeadTimeoutMs: 30_000,
  bodyIdleTimeoutMs: 60_000,
  backendTimeoutMs: 60_000,
  maxRequestsPerIdentity: 64,
};

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/i;

export const isLocal = (a: Address) => 'path' in a || LOOPBACK.test(a.host);

/**
 * Why a unix-socket target could be someone else's: a socket owned by another user (not root), or a directory
 * that other users can write without the sticky bit (they could replace the socket). undefined when neither.
 */
export function unixTargetRisk(p: string): string | undefined {
  const uid = process.getuid?.();
  try {
    const st = fs.statSync(p);
    if (uid !== undefined && st.uid !== uid && st.uid !== 0)
      return `the socket ${p} belongs to another user (uid ${st.uid})`;
  } catch {
    // not there yet (the target may start later): the directory decides
  }
  const dir = path.dirname(path.resolve(p));
  try {
    const d = fs.statSync(dir);
    if (d.mode & 0o002 && !(d.mode & 0o1000)) return `its directory ${dir} can be written by any user`;
    if (uid !== undefined && d.mode & 0o020 && d.uid !== uid && d.uid !== 0)
      return `its directory ${dir} can be written by another user's group`;
  } catch {
    return undefined;
  }
  return undefined;
}

function limitsFrom(raw: Raw | undefined, where: string): Limits {
  if (!raw) return { ...DEFAULT_LIMITS };
  const r = new Reader(raw, where, [
    'handshakeTimeout',
    'idleTimeout',
    'maxConnections',
    'maxLifetime',
    'requestHeadTimeout',
    'bodyIdleTimeout',
    'backendTimeout',
    'maxRequestsPerIdentity',
  ]);
  return {
    handshakeTimeoutMs: r.duration('handshakeTimeout', DEFAULT_LIMITS.handshakeTimeoutMs),
    idleTimeoutMs: r.duration('idleTimeout', DEFAULT_LIMITS.idleTimeoutMs),
    maxConnections: r.int('maxConnections', DEFAULT_LIMITS.maxConnections, 1),
    maxLifetimeMs: r.duration('maxLifetime', DEFAULT_LIMITS.maxLifetimeMs, true),
    requestHeadTimeoutMs: r.duration('requestHeadTimeout', DEFAULT_LIMITS.requestHeadTimeoutMs),
    bodyIdleTimeoutMs: r.duration('bodyIdleTimeout', DEFAULT_LIMITS.bodyIdleTimeoutMs),
    backendTimeoutMs: r.duration('backendTimeout', DEFAULT_LIMITS.backendTimeoutMs),
    maxRequestsPerIdentity: r.int('maxRequestsPerIdentity', DEFAULT_LIMITS.maxRequestsPerIdentity, 1),
  };
}

const SERVER_KEYS = [
  'name',
  'mode',
  'listen',
  'target',
  'protocol',
  'cert',
  'key',
  'ca',
  'keyPassphraseFile',
  'allow',
  'deny',
  'audit',
  'routes',
  'proxyProtocol',
  'proxyProtocolCertificate',
  'clientCertHeader',
  'xfccCertificate',
  'mergeSlashes',
  'denyAll',
  'unsafeTarget',
  'crl',
  'crlUrl',
  'crlRefresh',
  'crlSoftFail',
  'staple',
  'stapleUrl',
  'clientOcsp',
  'clientOcspUrl',
  'ocspSoftFail',
  'engine',
  'limits',
] as const;
const CLIENT_KEYS = [
  'name',
  'mode',
  'listen',
  'target',
  'cert',
  'key',
  'ca',
  'keyPassphraseFile',
  'expectSpiffeId',
  'servername',
  'staple',
  'unsafeListen',
  'limits',
] as const;

/** One listener from its raw mapping; every problem is one line naming the key. */
export function listenerFrom(raw: Raw, where: string, index: number): ListenerConfig {
  const mode = raw['mode'];
  if (mode !== 'server' && mode !== 'client')
    throw new MtlsError(
      'BAD_INPUT',
      `${where}.mode: must be 'server' (mTLS in, plaintext to the target) or 'client' (plaintext in, mTLS out)`,
    );
  const r = new Reader(raw, where, mode === 'server' ? SERVER_KEYS : CLIENT_KEYS);
  const common = {
    name: r.str('name', false) ?? `${mode}-${index}`,
    listen: r.address('listen'),
    cert: r.str('cert')!,
    key: r.str('key')!,
    ca: r.str('ca')!,
    ...(r.has('keyPassphraseFile') ? { keyPassphraseFile: r.str('keyPassphraseFile')! } : {}),
    limits: limitsFrom(r.object('limits'), `${where}.limits`),
  };
  if (mode === 'server') {
    const protocol = r.str('protocol', false) ?? 'tcp';
    if (protocol !== 'tcp' && protocol !== 'http')
      throw new MtlsError('BAD_INPUT', `${where}.protocol: must be tcp or http`);
    const target = r.address('target');
    const unsafeTarget = r.bool('unsafeTarget', false);
    if (!isLocal(target) && !unsafeTarget)
      throw new MtlsError(
        'BAD_INPUT',
        `${where}.target: ${formatAddress(target)} is not on loopback or a unix socket, ` +
          `so plaintext would leave this machine; set unsafeTarget: true (--unsafe-target) ` +
          `if that is intended`,
      );
    if ('path' in target && !unsafeTarget) {
      const why = unixTargetRisk(target.path);
      if (why)
        throw new MtlsError(
          'BAD_INPUT',
          `${where}.target: ${why}, so another user could receive the requests and ` +
            `the verified identities; fix that, or set unsafeTarget: true (--unsafe-target)`,
        );
    }
    if (r.has('routes') && protocol !== 'http')
      throw new MtlsError('BAD_INPUT', `${where}.routes: per-route rules need protocol: http`);
    if (r.has('mergeSlashes') && protocol !== 'http')
      throw new MtlsError('BAD_INPUT', `${where}.mergeSlashes: is for protocol: http`);
    const routes = r.mappings('routes', (x, w) => {
      const rr = new Reader(x, w, ['prefix', 'allow', 'deny']);
      return { prefix: rr.str('prefix')!, allow: rr.list('allow'), deny: rr.list('deny') };
    });
    const policy: PolicyConfig = {
      allow: r.list('allow'),
      deny: r.list('deny'),
      audit: r.bool('audit', false),
      ...(routes ? { routes } : {}),
    };
    // A listener that lets nobody in is almost always a forgotten rule (ghostunnel refuses it too): say it.
    const denyAll = r.bool('denyAll', false);
    const allowsSomeone = policy.allow.length > 0 || (routes ?? []).some((x) => x.allow.length > 0);
    if (!allowsSomeone && !denyAll)
      throw new MtlsError(
        'BAD_INPUT',
        `${where}: no allow rule, so every client would be refused; add one (allow: ` +
          `[...], --allow RULE), or set denyAll: true (--deny-all) if that is what you want`,
      );
    if (allowsSomeone && denyAll)
      throw new MtlsError('BAD_INPUT', `${where}.denyAll: contradicts the allow rules; drop one of them`);
    try {
      compilePolicy(policy);
    } catch (err) {
      throw new MtlsError('BAD_INPUT', `${where}: ${(err as Error).message}`);
    }
    const engine = r.str('engine', false) ?? 'auto';
    if (engine !== 'native' && engine !== 'node' && engine !== 'auto')
      throw new MtlsError('BAD_INPUT', `${where}.engine: must be native, node or auto`);
    if (engine === 'native' && protocol === 'http')
      throw new MtlsError(
        'BAD_INPUT',
        `${where}.engine: native is for protocol: tcp (HTTP mode runs on Node's TLS ` +
          `socket); drop it or use engine: node`,
      );
    const proxyProtocol = r.bool('proxyProtocol', false);
    if (proxyProtocol && protocol === 'http')
      throw new MtlsError(
        'BAD_INPUT',
        `${where}.proxyProtocol: is for protocol: tcp (HTTP mode passes the identity in X-Forwarded-Client-Cert)`,
      );
    return {
      ...common,
      mode,
      target,
      protocol,
      policy,
      proxyProtocol,
      unsafeTarget,
      engine,
      proxyProtocolCertificate: r.bool('proxyProtocolCertificate', false),
      clientCertHeader: r.bool('clientCertHeader', false),
      xfccCertificate: r.bool('xfccCertificate', false),
      mergeSlashes: r.bool('mergeSlashes', true),
      ...crlOf(r, where),
      ...(r.bool('crlSoftFail', false) ? { crlSoftFail: true } : {}),
      ...(r.bool('staple', false) || r.has('stapleUrl') ? { staple: true } : {}),
      ...(r.has('stapleUrl') ? { stapleUrl: r.str('stapleUrl')! } : {}),
      ...clientOcspOf(r, protocol, where),
    };
  }
  const target = r.address('target');
  if ('path' in target)
    throw new MtlsError(
      'BAD_INPUT',
      `${where}.target: a client listener connects to HOST:PORT over mTLS, not to a unix socket`,
    );
  const unsafeListen = r.bool('unsafeListen', false);
  if (!isLocal(common.listen) && !unsafeListen)
    throw new MtlsError(
      'BAD_INPUT',
      `${where}.listen: ${formatAddress(common.listen)} would accept plaintext ` +
        `from other machines; listen on 127.0.0.1 or a unix socket, or set unsafeListen: ` +
        `true (--unsafe-listen)`,
    );
  const expect = r.str('expectSpiffeId', false);
  if (expect !== undefined) compileSpiffePattern(expect);
  return {
    ...common,
    mode,
    target,
    unsafeListen,
    ...(expect ? { expectSpiffeId: expect } : {}),
    ...(r.has('servername') ? { servername: r.str('servername')! } : {}),
    ...(r.has('staple') ? { staple: stapleMode(r.str('staple')!, `${where}.staple`) } : {}),
  };
}

/** `crl: FILE`, or `crlUrl: [URL...]` with `crlRefresh` (fetched by the proxy into a file of its own: crl-urls.ts). */
function crlOf(r: Reader, where: string): { crl?: string; crlUrl?: string[]; crlRefreshMs?: number } {
  const urls = r.list('crlUrl');
  if (r.has('crlRefresh') && urls.length === 0)
    throw new MtlsError('BAD_INPUT', `${where}.crlRefresh goes with crlUrl`);
  if (urls.length === 0) return r.has('crl') ? { crl: r.str('crl')! } : {};
  if (r.has('crl')) throw new MtlsError('BAD_INPUT', `${where}: give crl or crlUrl, not both`);
  if (urls.length > MAX_CRL_URLS) throw new MtlsError('BAD_INPUT', `${where}.crlUrl: at most ${MAX_CRL_URLS} URLs`);
  for (const u of urls) {
    try {
      checkCrlUrl(u, `${where}.crlUrl`);
    } catch (err) {
      throw new MtlsError('BAD_INPUT', (err as Error).message);
    }
  }
  return { crlUrl: urls, crlRefreshMs: r.duration('crlRefresh', 30_000) };
}

function clientOcspOf(
  r: Reader,
  protocol: string,
  where: string,
): { clientOcsp?: true; clientOcspUrl?: string; ocspSoftFail?: true } {
  const on = r.bool('clientOcsp', false) || r.has('clientOcspUrl');
  if (!on) {
    if (r.bool('ocspSoftFail', false)) throw new MtlsError('BAD_INPUT', `${where}.ocspSoftFail goes with clientOcsp`);
    return {};
  }
  return {
    clientOcsp: true,
    ...(r.has('clientOcspUrl') ? { clientOcspUrl: r.str('clientOcspUrl')! } : {}),
    ...(r.bool('ocspSoftFail', false) ? { ocspSoftFail: true as const } : {}),
  };
}

function stapleMode(text: string, where: string): 'request' | 'require' {
  if (text !== 'request' && text !== 'require')
    throw new MtlsError('BAD_INPUT', `${where}: '${text}' must be request or require`);
  return text;
}
