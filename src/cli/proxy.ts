import type { Command } from 'commander';
import { MtlsError } from '../errors.js';
import { listenerFrom, parseAddress, type ProxyConfig } from '../proxy/config.js';
import { checkUnique, readProxyConfig } from '../proxy/config-file.js';
import { runProxy } from '../proxy/run.js';
import { parseDuration } from '../text/duration.js';
import { policyOptions, type PolicyFlags } from './common.js';
import { caFileOr } from './common.js';
import { agentFiles } from '../agent/agent.js';
import { readInput } from '../io/files.js';

interface CommonFlags {
  listen: string;
  target: string;
  cert?: string;
  key?: string;
  ca?: string;
  home?: string;
  name?: string;
  keyPassphraseFile?: string;
  caUrl?: string;
  token?: string;
  tokenFile?: string;
  handshakeTimeout?: string;
  idleTimeout?: string;
  maxConnections?: string;
  maxLifetime?: string;
  admin?: string;
  workers: string;
  drainTimeout: string;
  logLevel: string;
}
interface ServerFlags extends CommonFlags, PolicyFlags {
  http?: boolean;
  proxyProtocol?: boolean;
  proxyProtocolCertificate?: boolean;
  clientCertHeader?: boolean;
  xfccCertificate?: boolean;
  mergeSlashes?: boolean;
  unsafeTarget?: boolean;
  requestHeadTimeout?: string;
  bodyIdleTimeout?: string;
  backendTimeout?: string;
  maxRequestsPerIdentity?: string;
  denyAll?: boolean;
  crl?: string;
  crlUrl?: string[];
  crlRefresh: string;
  crlSoftFail?: boolean;
  staple?: string | true;
  clientOcsp?: string | true;
  ocspSoftFail?: boolean;
  engine?: string;
}
interface ClientFlags extends CommonFlags {
  expectSpiffeId?: string;
  servername?: string;
  unsafeListen?: boolean;
  staple?: string;
}

const defined = (o: Record<string, unknown>) =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

function common(c: Command): Command {
  return c
    .requiredOption('--listen <addr>', 'address to accept on: HOST:PORT or unix:PATH')
    .requiredOption('--target <addr>', 'where to connect: HOST:PORT (or unix:PATH for a server target)')
    .option('--cert <file>', 'our certificate chain (PEM)')
    .option('--key <file>', 'our key')
    .option('--ca <file>', 'trust bundle for the peer (default: the CA home ca.crt)')
    .option('--key-passphrase-file <file>', 'passphrase of --key')
    .option('--ca-url <url>', 'instead of --cert/--key: enroll with mtls ca serve at this URL and keep renewing')
    .option('--token <token>', 'with --ca-url: the one-time enrollment token (mtls ca token)')
    .option('--token-file <file>', 'with --ca-url: read the token from this file')
    .option('--name <name>', 'listener name in logs and metrics')
    .option('--handshake-timeout <d>', 'cut connections whose handshake has not finished (default 10s)')
    .option('--idle-timeout <d>', 'close after no traffic for this long (default 5m)')
    .option('--max-connections <n>', 'refuse connections beyond this many (default 10000)')
    .option('--max-lifetime <d>', 'close connections older than this (default: none)')
    .option('--admin <addr>', 'admin port for /metrics, /healthz, /readyz (e.g. 127.0.0.1:9901)')
    .option('--workers <n>', "worker processes sharing session ticket keys ('auto' = one per core)", '1')
    .option('--drain-timeout <d>', 'on SIGTERM, how long live connections may finish', '30s')
    .option('--log-level <level>', 'debug, info, warn or error', 'info')
    .option('--home <dir>', 'CA home for the default --ca');
}

function globalFrom(o: CommonFlags): Omit<ProxyConfig, 'listeners'> {
  if (!['debug', 'info', 'warn', 'error'].includes(o.logLevel))
    throw new MtlsError('USAGE', `--log-level '${o.logLevel}' must be debug, info, warn or error`);
  const workers = o.workers === 'auto' ? 0 : Number(o.workers);
  if (!Number.isInteger(workers) || workers < 0)
    throw new MtlsError('USAGE', `--workers '${o.workers}' must be a number or auto`);
  return {
    workers,
    drainTimeoutMs: parseDuration(o.drainTimeout, '--drain-timeout'),
    logLevel: o.logLevel as ProxyConfig['logLevel'],
    ...(o.admin ? { admin: parseAddress(o.admin, '--admin') } : {}),
  };
}

/**
 * With --ca-url: an agent enrolls with the token and keeps the certificate renewed in a private directory; the
 * listener uses those files (and its watcher reloads each renewal). --ca is the CA's root.
 */
async function enrolled(o: CommonFlags): Promise<void> {
  if (!o.caUrl) {
    if (o.token || o.tokenFile) throw new MtlsError('USAGE', '--token goes with --ca-url');
    return;
  }
  if (o.cert || o.key) throw new MtlsError('USAGE', 'give --ca-url (with a token) or --cert and --key, not both');
  const token = o.tokenFile
    ? readInput(o.tokenFile, 'token', 16 * 1024)
        .toString('utf8')
        .trim()
    : o.token;
  if (!token) throw new MtlsError('USAGE', '--ca-url needs --token or --token-file (mtls ca token NAME)');
  const ca = caFileOr(o.ca, o.home);
  const files = await agentFiles({
    caUrl: o.caUrl,
    root: readInput(ca, 'CA root bundle').toString('utf8'),
    token,
    log: (e) => process.stderr.write(`${JSON.stringify({ level: 'info', time: new Date().toISOString(), ...e })}\n`),
  });
  process.once('exit', files.close);
  o.cert = files.cert;
  o.key = files.key;
  o.ca = ca;
}

function rawCommon(mode: 'server' | 'client', o: CommonFlags) {
  if (!o.cert || !o.key) throw new MtlsError('USAGE', `proxy ${mode} needs --cert and --key`);
  const max = o.maxConnections === undefined ? undefined : Number(o.maxConnections);
  if (max !== undefined && (!Number.isInteger(max) || max < 1))
    throw new MtlsError('USAGE', `--max-connections '${o.maxConnections}' must be a whole number, at least 1`);
  return defined({
    mode,
    name: o.name ?? mode,
    listen: o.listen,
    target: o.target,
    cert: o.cert,
    key: o.key,
    ca: caFileOr(o.ca, o.home),
    keyPassphraseFile: o.keyPassphraseFile,
    limits: defined({
      handshakeTimeout: o.handshakeTimeout,
      idleTimeout: o.idleTimeout,
      maxConnections: max,
      maxLifetime: o.maxLifetime,
    }),
  });
}

export function registerProxy(program: Command): void {
  const proxy = program
    .command('proxy')
    .description(
      'sidecar proxy: mTLS in front of any service (server) or under any client ' +
        '(client); --config for several listeners',
    )
    .option('--config <file>', 'YAML config with one or more listeners (see docs/proxy.md)')
    .option('--check', 'with --config: validate the config and exit')
    .action(async (o: { config?: string; check?: boolean }) => {
      if (!o.config)
        throw new MtlsError('USAGE', "give --config FILE, or use 'mtls proxy server' / 'mtls proxy client'");
      const config = readProxyConfig(o.config);
      if (o.check) {
        console.log(`${o.config}: ok (${config.listeners.map((l) => `${l.name}: ${l.mode}`).join(', ')})`);
        return;
      }
      await runProxy(config, o.config);
    });
  policyOptions(common(proxy.command('server')))
    .description(
      'terminate mTLS, authorize the client with the policy, relay to a plaintext target on loopback or a unix socket',
    )
    .option('--http', 'HTTP mode: forward requests with X-Forwarded-Client-Cert (sanitize-and-set)')
    .option('--client-cert-header', 'HTTP mode: also set RFC 9440 Client-Cert')
    .option('--xfcc-certificate', 'HTTP mode: include the PEM certificate in XFCC (Cert=)')
    .option('--deny-all', 'start with no allow rule (every client refused); without it, a missing --allow is an error')
    .option('--request-head-timeout <d>', 'HTTP mode: the request head must arrive within this, else 408 (default 30s)')
    .option('--body-idle-timeout <d>', 'HTTP mode: a request body silent for this long is cut with 408 (default 60s)')
    .option('--backend-timeout <d>', 'HTTP mode: the target must start answering within this, else 504 (default 60s)')
    .option(
      '--max-requests-per-identity <n>',
      'HTTP mode: requests of one identity waiting on the target at once; more get 503 (default 64)',
    )
    .option(
      '--no-merge-slashes',
      "HTTP mode: keep '//' in paths (by default merged before the route policy and the target see them)",
    )
    .option('--proxy-protocol', 'TCP mode: send a PROXY v2 header with the client identity TLVs')
    .option('--proxy-protocol-certificate', 'TCP mode: include the DER client certificate as a TLV')
    .option('--crl <file>', 'PEM CRLs to check clients against (one for every CA in the chain)')
    .option(
      '--crl-url <url...>',
      "fetch the CRLs from these URLs (e.g. the CA's BASE/crl/intermediate.crl and BASE/crl/root.crl), kept fresh",
    )
    .option('--crl-refresh <duration>', 'how often --crl-url is asked again (conditional GET)', '30s')
    .option(
      '--crl-soft-fail',
      'when the CRLs pass their nextUpdate, admit clients they do not list (logged, counted) instead of refusing all',
    )
    .option(
      '--staple [url]',
      "staple our certificate's OCSP status (from the responder it names, or URL), refreshed before it expires",
    )
    .option(
      '--client-ocsp [url]',
      "TCP mode: ask each client certificate's OCSP responder (the one it names, or URL) before admitting it",
    )
    .option(
      '--ocsp-soft-fail',
      'admit a client whose OCSP status cannot be had (logged, counted) instead of refusing it',
    )
    .option('--unsafe-target', 'allow a target that is not loopback or a unix socket')
    .option(
      '--engine <engine>',
      "TCP mode: 'native' (TLS and relay on a thread of our own with OpenSSL), " +
        "'node' (Node's TLS socket) or 'auto' (native when built)",
      'auto',
    )
    .action(async (o: ServerFlags) => {
      const perIdentity = o.maxRequestsPerIdentity === undefined ? undefined : Number(o.maxRequestsPerIdentity);
      if (perIdentity !== undefined && (!Number.isInteger(perIdentity) || perIdentity < 1))
        throw new MtlsError(
          'USAGE',
          `--max-requests-per-identity '${o.maxRequestsPerIdentity}' must be a whole number, at least 1`,
        );
      if (o.crl && o.crlUrl) throw new MtlsError('USAGE', 'give --crl or --crl-url, not both');
      await enrolled(o);
      const common = rawCommon('server', o);
      common['limits'] = defined({
        ...(common['limits'] as Record<string, unknown>),
        requestHeadTimeout: o.requestHeadTimeout,
        bodyIdleTimeout: o.bodyIdleTimeout,
        backendTimeout: o.backendTimeout,
        maxRequestsPerIdentity: perIdentity,
      });
      const raw = defined({
        ...common,
        protocol: o.http ? 'http' : 'tcp',
        allow: o.allow,
        deny: o.deny,
        audit: o.audit,
        proxyProtocol: o.proxyProtocol,
        proxyProtocolCertificate: o.proxyProtocolCertificate,
        clientCertHeader: o.clientCertHeader,
        xfccCertificate: o.xfccCertificate,
        denyAll: o.denyAll,
        mergeSlashes: o.mergeSlashes === false ? false : undefined,
        unsafeTarget: o.unsafeTarget,
        crl: o.crl,
        // Fetched by the proxy into a private file, watched and enforced exactly as a --crl file (crl-urls.ts).
        crlUrl: o.crlUrl,
        crlRefresh: o.crlUrl ? o.crlRefresh : undefined,
        crlSoftFail: o.crlSoftFail,
        staple: o.staple ? true : undefined,
        clientOcsp: o.clientOcsp ? true : undefined,
        clientOcspUrl: typeof o.clientOcsp === 'string' ? o.clientOcsp : undefined,
        ocspSoftFail: o.ocspSoftFail,
        stapleUrl: typeof o.staple === 'string' ? o.staple : undefined,
        engine: o.engine,
      });
      const l = listenerFrom(raw, 'proxy server', 0);
      await runProxy({ ...globalFrom(o), listeners: [l] });
    });
  common(proxy.command('client'))
    .description('accept plaintext on loopback, connect to the target with mTLS, verify the server identity')
    .option('--expect-spiffe-id <uri>', "check the server's SPIFFE ID (pattern) instead of its DNS name")
    .option('--servername <name>', 'name to send (SNI) and check (default: the target host)')
    .option('--unsafe-listen', 'allow a plaintext listener that is not on loopback or a unix socket')
    .option(
      '--staple <mode>',
      "check the server's stapled OCSP status: request (if sent; a revoked one is refused) or require",
    )
    .action(async (o: ClientFlags) => {
      await enrolled(o);
      const raw = defined({
        ...rawCommon('client', o),
        expectSpiffeId: o.expectSpiffeId,
        servername: o.servername,
        staple: o.staple,
        unsafeListen: o.unsafeListen,
      });
      const l = listenerFrom(raw, 'proxy client', 0);
      checkUnique([l], 'proxy client');
      await runProxy({ ...globalFrom(o), listeners: [l] });
    });
}
