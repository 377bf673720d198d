import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type { Command } from 'commander';
import { CertificateAuthority } from '../ca/authority.js';
import { resolveCaHome } from '../ca/home.js';
import { writeIssued } from '../ca/output.js';
import { createMtlsHttpsServer } from '../adapters/http.js';
import { MtlsError } from '../errors.js';
import { identityJson } from '../identity/identity.js';
import { compilePolicy } from '../identity/policy.js';
import { certLabel } from '../pki/path-rules.js';
import { isIpLiteral } from '../pki/names.js';
import { loadCredentials, type Credentials } from '../tls/credentials.js';
import { serverTlsOptions } from '../tls/options.js';
import { formatDn } from '../pki/names.js';
import { CrlSet } from '../tls/crl-file.js';
import { OcspStapler } from '../tls/stapling.js';
import { OcspClientChecker } from '../tls/ocsp-clients.js';
import { crlFileFromUrls } from '../tls/crl-fetch.js';
import { parseDuration } from '../text/duration.js';
import { CredentialReloader } from '../tls/reload.js';
import { createMtlsServer, type ConnectionEvent, type HandshakeErrorEvent } from '../tls/server.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { listenOn } from '../io/listen.js';
import { caFileOr, optionalPassphrase, policyOptions, type PolicyFlags } from './common.js';
import { ServeMetrics } from './serve-metrics.js';
import { parseAddress } from '../io/address.js';

interface ServeFlags extends PolicyFlags {
  port: string;
  host: string;
  cert?: string;
  key?: string;
  ca?: string;
  http?: boolean;
  home?: string;
  passphraseFile?: string;
  keyPassphraseFile?: string;
  crl?: string;
  crlSoftFail?: boolean;
  staple?: string | true;
  crlUrl?: string[];
  crlRefresh: string;
  clientOcsp?: string | true;
  ocspSoftFail?: boolean;
  admin?: string;
}

export function registerServe(program: Command): void {
  policyOptions(program.command('serve'))
    .description('an mTLS server that shows who connected and which rule allowed or denied them')
    .option('--port <port>', 'port to listen on', '8443')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option(
      '--cert <file>',
      'server certificate chain (default: a 24h certificate for localhost issued by the CA home)',
    )
    .option('--key <file>', 'server key')
    .option('--ca <file>', 'trusted CA bundle for client certificates (default: the CA home ca.crt)')
    .option('--http', 'answer HTTPS requests with the caller identity as JSON (403 with the reason when denied)')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--passphrase-file <file>', 'passphrase of the CA key (for the default certificate)')
    .option('--key-passphrase-file <file>', 'passphrase of --key, if it is encrypted')
    .option(
      '--crl <file>',
      'CRLs of every CA of the bundle (PEM, e.g. HOME/crl/crl.pem); watched: a revocation is in force on reload',
    )
    .option(
      '--crl-soft-fail',
      'when the CRLs pass their nextUpdate, admit clients they do not list (logged) instead of refusing all',
    )
    .option(
      '--crl-url <url...>',
      "fetch the CRLs from these URLs (e.g. the CA's BASE/crl/intermediate.crl and BASE/crl/root.crl), kept fresh",
    )
    .option('--crl-refresh <duration>', 'how often --crl-url is asked again (conditional GET)', '30s')
    .option(
      '--client-ocsp [url]',
      "ask each client certificate's OCSP responder (the one it names, or URL) before admitting it; answers cached 5 s",
    )
    .option('--ocsp-soft-fail', 'admit a client whose OCSP status cannot be had (logged) instead of refusing it')
    .option(
      '--staple [url]',
      "staple our certificate's OCSP status (from the responder it names, or URL), refreshed before it expires",
    )
    .option('--admin <address>', 'HOST:PORT of a plain-HTTP admin port: /metrics (Prometheus), /healthz, /readyz')
    .action(async (o: ServeFlags) => {
      if (!/^\d{1,5}$/.test(o.port) || Number(o.port) > 65535)
        throw new MtlsError('USAGE', `--port '${o.port}' is not a port number`);
      if ((o.cert === undefined) !== (o.key === undefined))
        throw new MtlsError(
          'USAGE',
          'give both --cert and --key, or neither (then a certificate is issued from the CA home)',
        );
      const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
      const adminAt = o.admin !== undefined ? parseAddress(o.admin, '--admin') : undefined;
      const metrics = new ServeMetrics();
      if (o.crl && o.crlUrl) throw new MtlsError('USAGE', 'give --crl or --crl-url, not both');
      const policy = compilePolicy({ allow: o.allow, deny: o.deny, audit: o.audit ?? false });
      // CRLs from URLs land in a private file that is then watched like --crl (tls/crl-fetch.ts).
      const fetched = o.crlUrl
        ? await crlFileFromUrls(o.crlUrl, {
            intervalMs: parseDuration(o.crlRefresh, '--crl-refresh'),
            onEvent: (e) =>
              e.event === 'crl-fetch-failed' &&
              log(
                `CRL FETCH FAILED: ${e.url} ${e.reason}; keeping the CRLs in force, retry in ${Math.round(e.retryInMs / 1000)} s`,
              ),
          })
        : undefined;
      if (fetched) o.crl = fetched.file;
      const caFile = caFileOr(o.ca, o.home);
      let creds: Credentials;
      let reloader: CredentialReloader | undefined;
      const extraFiles = o.crl ? [o.crl] : [];
      if (o.cert && o.key) {
        const passphrase = optionalPassphrase(o.keyPassphraseFile);
        reloader = new CredentialReloader({
          certFile: o.cert,
          keyFile: o.key,
          caFile,
          extraFiles,
          ...(passphrase !== undefined ? { passphrase } : {}),
        });
        creds = reloader.current;
      } else {
        const e = await ephemeralServerCredentials(o.home, optionalPassphrase(o.passphraseFile), caFile, o.host);
        creds = e.creds;
        // With CRLs, the files of the issued certificate are watched too, so that a new CRL is taken in.
        if (o.crl) reloader = new CredentialReloader({ certFile: e.certFile, keyFile: e.keyFile, caFile, extraFiles });
      }
      // Checked now (every CA of the bundle has a current CRL signed by it) and again at every reload; looked up
      // by the server at each handshake and request, never handed to OpenSSL (src/tls/server.ts serverCrls).
      const crls = o.crl
        ? new CrlSet(readInput(o.crl, 'CRL file', MAX_INPUT.crl), `CRL file ${o.crl}`, creds, {
            softFail: o.crlSoftFail === true,
            onStaleAdmission: () => metrics.crlStaleAdmissions.inc(),
            onStale: (crl) =>
              log(
                `CRL STALE: the CRL of '${formatDn(crl.issuer)}' is past its nextUpdate; admitting clients it does ` +
                  'not list (--crl-soft-fail); publish a new CRL',
              ),
          })
        : undefined;
      const stapler = o.staple
        ? new OcspStapler({
            ...(o.staple === true ? {} : { url: o.staple }),
            onEvent: (e) =>
              log(
                e.event === 'ocsp-staple'
                  ? `OCSP staple for '${e.certificate}': ${e.status} (${e.url}, next update ${e.nextUpdate ?? 'none'})`
                  : `OCSP staple for '${e.certificate}' FAILED: ${e.reason}; retry in ${Math.round(e.retryInMs / 1000)} s`,
              ),
          })
        : undefined;
      const clientOcsp = o.clientOcsp
        ? new OcspClientChecker({
            ...(o.clientOcsp === true ? {} : { url: o.clientOcsp }),
            softFail: o.ocspSoftFail === true,
            onEvent: (e) => {
              if (e.event !== 'ocsp-client-unknown') return;
              metrics.ocspUnknown.inc({ result: e.admitted ? 'admitted' : 'refused' });
              if (e.admitted) log(`OCSP UNKNOWN: '${e.certificate}' admitted (--ocsp-soft-fail): ${e.reason}`);
            },
          })
        : undefined;
      if (o.ocspSoftFail && !clientOcsp) throw new MtlsError('USAGE', '--ocsp-soft-fail goes with --client-ocsp');
      const crlOption = {
        ...(crls ? { crl: crls } : {}),
        ...(stapler ? { staple: stapler } : {}),
        ...(clientOcsp ? { ocsp: clientOcsp } : {}),
      };
      const tlsFor = (c: Credentials) => {
        if (o.crl) crls?.replace(readInput(o.crl, 'CRL file', MAX_INPUT.crl), `CRL file ${o.crl}`, c);
        return serverTlsOptions(c);
      };
      const server: tls.Server = o.http
        ? createMtlsHttpsServer(
            { credentials: creds, policy, ...crlOption },
            (req, res) => {
              const body = JSON.stringify(
                {
                  identity: req.mtls?.identity ? identityJson(req.mtls.identity) : null,
                  decision: req.mtls?.decision.reason,
                },
                null,
                2,
              );
              res.writeHead(200, { 'content-type': 'application/json' });
              res.end(body + '\n');
            },
            (req, m) => {
              metrics.connections.inc({ decision: m.decision.allowed ? 'allowed' : 'denied' });
              log(
                `${req.socket.remoteAddress}:${req.socket.remotePort} ${req.method} ${req.url} ` +
                  `${m.decision.allowed ? 'ALLOW' : 'DENY'} ${m.decision.reason}`,
              );
            },
          )
        : createMtlsServer({ credentials: creds, policy, ...crlOption }, (socket, id) =>
            socket.end(`hello ${id.spiffeId?.uri ?? id.subjectDn}\n`),
          );
      if (!o.http) {
        server.on('mtls:connection', (e: ConnectionEvent) => {
          metrics.connections.inc({ decision: e.decision.allowed ? 'allowed' : 'denied' });
          log(
            `${e.remote} ${e.decision.allowed ? 'ALLOW' : 'DENY'} ${e.decision.reason}${e.resumed ? ' (resumed session)' : ''}`,
          );
        });
      }
      server.on('mtls:handshake-error', (e: HandshakeErrorEvent) => {
        metrics.handshakeErrors.inc({ code: e.error.code });
        log(`${e.remote} HANDSHAKE FAILED [${e.error.code}] ${e.error.message}`);
      });
      server.on('mtls:connection-error', (e: HandshakeErrorEvent) =>
        log(`${e.remote} CONNECTION FAILED [${e.error.code}] ${e.error.message}`),
      );
      // Listen first: file watchers started before a failed listen kept the process alive after its error line.
      await listenOn(server, { host: o.host, port: Number(o.port) }, 'serve');
      const admin = adminAt ? metrics.adminServer(() => server.listening) : undefined;
      if (admin && adminAt) await listenOn(admin, adminAt, 'the admin port (--admin)');
      if (reloader) {
        reloader.attach(server, tlsFor).start();
        reloader.on('reloaded', (e) =>
          log(
            `reloaded: certificate ${e.fingerprint256.slice(0, 23)}...${e.trustChanged ? ', trust bundle changed: session tickets invalidated' : ''}`,
          ),
        );
        reloader.on('reload-error', (err: Error) => log(`reload failed: ${err.message}`));
        process.on('SIGHUP', () => void reloader!.reload());
      }
      const addr = server.address() as { port: number };
      const allow = o.allow.length ? `allow ${o.allow.join(' | ')}` : 'deny everyone (add --allow)';
      const deny = o.deny.length ? `; deny ${o.deny.join(' | ')}` : '';
      log(
        `listening on ${o.host}:${addr.port} (mTLS${o.http ? ' + HTTP' : ''}, TLS ` +
          `1.2+, client certificate required; server '${certLabel(creds.leaf)}'; policy: ` +
          `${allow}${deny}${o.audit ? '; AUDIT mode' : ''})`,
      );
      await new Promise<void>((resolve) => {
        const stop = () => {
          reloader?.stop();
          fetched?.close();
          admin?.close();
          server.close(() => resolve());
          setTimeout(resolve, 2000).unref();
        };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}

/**
 * The certificate `serve` uses without --cert: issued once by the CA home into HOME/serve/ (key 0600) and reused
 * while it has more than an hour left and covers the names asked for; a new one only when it does not.
 */
async function ephemeralServerCredentials(
  home: string | undefined,
  passphrase: string | undefined,
  caFile: string,
  host: string,
): Promise<{ creds: Credentials; certFile: string; keyFile: string }> {
  const caHome = resolveCaHome(home);
  const dir = path.join(caHome, 'serve');
  const ips = [
    ...new Set(['127.0.0.1', '::1', ...(isIpLiteral(host) && host !== '0.0.0.0' && host !== '::' ? [host] : [])]),
  ];
  const ca = readInput(caFile, 'CA bundle', MAX_INPUT.bundle);
  const certFile = path.join(dir, 'mtls-serve.crt');
  const keyFile = path.join(dir, 'mtls-serve.key');
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
    try {
      const c = loadCredentials({ certFile, keyFile, caFile });
      const fresh = c.leaf.notAfter.getTime() - Date.now() > 3600e3 && c.leaf.notBefore.getTime() <= Date.now();
      if (fresh && ips.every((ip) => c.leaf.san?.ip.includes(ip)) && c.leaf.san?.dns.includes('localhost'))
        return { creds: c, certFile, keyFile };
    } catch {
      // unreadable or from another CA: issue a new one below
    }
  }
  const authority = await CertificateAuthority.open(caHome, passphrase);
  try {
    const issued = await authority.issue(
      { profile: 'server', name: 'mtls-serve', names: { dns: ['localhost'], ip: ips }, validityMs: 86400e3 },
      (i) => {
        writeIssued(i, { outDir: dir, name: 'mtls-serve', bundlePem: authority.bundlePem, overwrite: true });
      },
    );
    return { creds: loadCredentials({ cert: issued.chainPem, key: issued.privateKey!, ca }), certFile, keyFile };
  } finally {
    await authority.close();
  }
}
