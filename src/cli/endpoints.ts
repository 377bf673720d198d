import tls from 'node:tls';
import type { Command } from 'commander';
import { CertificateAuthority } from '../ca/authority.js';
import { resolveCaHome } from '../ca/home.js';
import { createMtlsHttpsServer } from '../adapters/http.js';
import { explainRequest, explainServerChain } from '../doctor/explain.js';
import { MtlsError, exitCodeOf } from '../errors.js';
import { identityJson } from '../identity/identity.js';
import { compilePolicy } from '../identity/policy.js';
import { readCertificates } from '../pki/certificate.js';
import { certLabel, verifyChain } from '../pki/verify.js';
import { connectMtls } from '../tls/client.js';
import { Capture } from '../tls/capture.js';
import { isIpLiteral } from '../pki/names.js';
import { loadCredentials, type Credentials } from '../tls/credentials.js';
import { classifyTlsError } from '../tls/errors.js';
import { serverTlsOptions } from '../tls/options.js';
import { CredentialReloader } from '../tls/reload.js';
import { createMtlsServer, type ConnectionEvent, type HandshakeErrorEvent } from '../tls/server.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { listenOn } from '../io/listen.js';
import { parseHostPort } from '../io/address.js';
import { caFileOr, optionalPassphrase, policyOptions, printJson, type PolicyFlags } from './common.js';

interface ServeFlags extends PolicyFlags {
  port: string; host: string; cert?: string; key?: string; ca?: string; http?: boolean;
  home?: string; passphraseFile?: string; keyPassphraseFile?: string;
}

export function registerServe(program: Command): void {
  policyOptions(program.command('serve'))
    .description('an mTLS server that shows who connected and which rule allowed or denied them')
    .option('--port <port>', 'port to listen on', '8443')
    .option('--host <address>', 'address to listen on', '127.0.0.1')
    .option('--cert <file>', 'server certificate chain (default: a 24h certificate for localhost issued by the CA home)')
    .option('--key <file>', 'server key')
    .option('--ca <file>', 'trusted CA bundle for client certificates (default: the CA home ca.crt)')
    .option('--http', 'answer HTTPS requests with the caller identity as JSON (403 with the reason when denied)')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--passphrase-file <file>', 'passphrase of the CA key (for the default certificate)')
    .option('--key-passphrase-file <file>', 'passphrase of --key, if it is encrypted')
    .action(async (o: ServeFlags) => {
      if (!/^\d{1,5}$/.test(o.port) || Number(o.port) > 65535) throw new MtlsError('USAGE', `--port '${o.port}' is not a port number`);
      if ((o.cert === undefined) !== (o.key === undefined)) throw new MtlsError('USAGE', 'give both --cert and --key, or neither (then a certificate is issued from the CA home)');
      const policy = compilePolicy({ allow: o.allow, deny: o.deny, audit: o.audit ?? false });
      const caFile = caFileOr(o.ca, o.home);
      let creds: Credentials;
      let reloader: CredentialReloader | undefined;
      if (o.cert && o.key) {
        const passphrase = optionalPassphrase(o.keyPassphraseFile);
        reloader = new CredentialReloader({ certFile: o.cert, keyFile: o.key, caFile, ...(passphrase !== undefined ? { passphrase } : {}) });
        creds = reloader.current;
      } else {
        creds = await ephemeralServerCredentials(o.home, optionalPassphrase(o.passphraseFile), caFile, o.host);
      }
      const log = (line: string) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);
      const server: tls.Server = o.http
        ? createMtlsHttpsServer({ credentials: creds, policy }, (req, res) => {
          const body = JSON.stringify({ identity: req.mtls?.identity ? identityJson(req.mtls.identity) : null, decision: req.mtls?.decision.reason }, null, 2);
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(body + '\n');
        }, (req, m) => log(`${req.socket.remoteAddress}:${req.socket.remotePort} ${req.method} ${req.url} ${m.decision.allowed ? 'ALLOW' : 'DENY'} ${m.decision.reason}`))
        : createMtlsServer({ credentials: creds, policy }, (socket, id) => socket.end(`hello ${id.spiffeId?.uri ?? id.subjectDn}\n`));
      if (!o.http) {
        server.on('mtls:connection', (e: ConnectionEvent) => log(`${e.remote} ${e.decision.allowed ? 'ALLOW' : 'DENY'} ${e.decision.reason}${e.resumed ? ' (resumed session)' : ''}`));
      }
      server.on('mtls:handshake-error', (e: HandshakeErrorEvent) => log(`${e.remote} HANDSHAKE FAILED [${e.error.code}] ${e.error.message}`));
      server.on('mtls:connection-error', (e: HandshakeErrorEvent) => log(`${e.remote} CONNECTION FAILED [${e.error.code}] ${e.error.message}`));
      // Listen first: file watchers started before a failed listen kept the process alive after its error line.
      await listenOn(server, { host: o.host, port: Number(o.port) }, 'serve');
      if (reloader) {
        reloader.attach(server, (c) => serverTlsOptions(c)).start();
        reloader.on('reloaded', (e) => log(`reloaded: certificate ${e.fingerprint256.slice(0, 23)}...${e.trustChanged ? ', trust bundle changed: session tickets invalidated' : ''}`));
        reloader.on('reload-error', (err: Error) => log(`reload failed: ${err.message}`));
        process.on('SIGHUP', () => void reloader!.reload());
      }
      const addr = server.address() as { port: number };
      log(`listening on ${o.host}:${addr.port} (mTLS${o.http ? ' + HTTP' : ''}, TLS 1.2+, client certificate required; server '${certLabel(creds.leaf)}'; policy: ${o.allow.length ? `allow ${o.allow.join(' | ')}` : 'deny everyone (add --allow)'}${o.deny.length ? `; deny ${o.deny.join(' | ')}` : ''}${o.audit ? '; AUDIT mode' : ''})`);
      await new Promise<void>((resolve) => {
        const stop = () => { reloader?.stop(); server.close(() => resolve()); setTimeout(resolve, 2000).unref(); };
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
    });
}

async function ephemeralServerCredentials(home: string | undefined, passphrase: string | undefined, caFile: string, host: string): Promise<Credentials> {
  const ca = await CertificateAuthority.open(resolveCaHome(home), passphrase);
  try {
    const ips = ['127.0.0.1', '::1', ...(isIpLiteral(host) && host !== '0.0.0.0' && host !== '::' ? [host] : [])];
    const issued = await ca.issue({ profile: 'server', name: 'mtls-serve', names: { dns: ['localhost'], ip: [...new Set(ips)] }, validityMs: 86400e3 });
    return loadCredentials({ cert: issued.chainPem, key: issued.privateKey!, ca: readInput(caFile, 'CA bundle', MAX_INPUT.bundle) });
  } finally {
    await ca.close();
  }
}

interface ConnectFlags {
  cert?: string; key?: string; ca?: string; servername?: string; expectSpiffeId?: string; home?: string; keyPassphraseFile?: string;
  wait: string; json?: boolean;
}

export function registerConnect(program: Command): void {
  program.command('connect <hostport>')
    .description('connect with mTLS and explain the result; exit 0 accepted, 1 server failed our checks, 3 server rejected us, 4 unreachable')
    .option('--cert <file>', 'our client certificate chain')
    .option('--key <file>', 'our key')
    .option('--ca <file>', 'trusted CA bundle for the server (default: the CA home ca.crt)')
    .option('--servername <name>', 'name to send (SNI) and check (default: the host)')
    .option('--expect-spiffe-id <uri>', 'check the server SPIFFE ID (pattern) instead of its DNS name')
    .option('--wait <ms>', 'TLS 1.3: how long to wait for the server to reject our certificate', '500')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--key-passphrase-file <file>', 'passphrase of --key')
    .option('--json', 'machine-readable output')
    .action(async (target: string, o: ConnectFlags) => {
      const { host, port } = parseHostPort(target);
      if ((o.cert === undefined) !== (o.key === undefined)) throw new MtlsError('USAGE', 'give both --cert and --key, or neither (to connect without a client certificate)');
      if (!/^\d{1,5}$/.test(o.wait)) throw new MtlsError('USAGE', `--wait '${o.wait}' must be milliseconds`);
      const caFile = caFileOr(o.ca, o.home);
      const passphrase = optionalPassphrase(o.keyPassphraseFile);
      const creds = o.cert && o.key ? loadCredentials({ certFile: o.cert, keyFile: o.key, caFile, ...(passphrase !== undefined ? { passphrase } : {}) }) : undefined;
      const ca = readInput(caFile, 'CA bundle', MAX_INPUT.bundle).toString('utf8');
      const expect = { ...(o.servername ? { servername: o.servername } : {}), ...(o.expectSpiffeId ? { spiffeId: o.expectSpiffeId } : {}) };
      const lines: [string, string][] = [];
      const say = (k: string, v: string) => { lines.push([k, v]); if (!o.json) console.log(`  ${k.padEnd(14)}${v}`); };
      if (!o.json) console.log(`connecting to ${host}:${port}${creds ? ` as '${certLabel(creds.leaf)}'` : ' without a client certificate'}`);
      const capture = new Capture();
      const explain = () => {
        const r = explainRequest(capture);
        if (r.certificate === 'asked') {
          const cas = r.acceptableCas.length ? r.acceptableCas.join(' | ') : 'any';
          say('server asked', `for a client certificate (signature algorithms: ${r.signatureAlgorithms.join(', ') || 'any'}; acceptable CAs: ${cas})`);
        } else if (r.certificate === 'not asked' || r.notes.length) {
          say('server asked', r.notes.length ? `(could not read the encrypted flight: ${r.notes.join('; ')})` : 'for no client certificate');
        }
        for (const a of r.alerts) say('server alert', `${a}${r.decrypted ? ' (decrypted)' : ''}`);
      };
      try {
        const c = await connectMtls({ host, port, ca, expect, confirmMs: Number(o.wait), capture, ...(creds ? { credentials: creds } : {}) });
        const eph = c.socket.getEphemeralKeyInfo() as { name?: string; type?: string } | null;
        say('protocol', `${c.socket.getProtocol()} ${c.socket.getCipher().standardName}, key exchange ${eph?.name ?? eph?.type ?? 'n/a (resumed)'}`);
        const chain = c.chain;
        const verdict = verifyChain(chain[0]!, { trustAnchors: readCertificates(Buffer.from(ca), caFile), intermediates: chain.slice(1), at: new Date(), purpose: 'server' });
        say('server chain', `${verdict.valid ? 'verified' : 'NOT verified'}: ${verdict.chain.map((x) => `'${certLabel(x)}'`).join(' <- ')}`);
        explain();
        say('server', `${c.server.spiffeId ? c.server.spiffeId.uri + ' ' : ''}${[...c.server.dns.map((d) => `DNS:${d}`), ...c.server.ips.map((i) => `IP:${i}`)].join(', ')} (${o.expectSpiffeId ? `matches ${o.expectSpiffeId}` : `valid for '${o.servername ?? host}'`})`);
        say('our cert', creds ? `'${certLabel(creds.leaf)}' sent and accepted${c.socket.getProtocol() === 'TLSv1.3' ? ` (no rejection within ${o.wait} ms)` : ''}` : 'none sent; the server did not require one');
        say('result', 'mutual TLS established');
        if (o.json) printJson({ ok: true, protocol: c.socket.getProtocol(), cipher: c.socket.getCipher().standardName, server: identityJson(c.server), resumed: c.resumed, lines });
        c.socket.destroy();
      } catch (err) {
        const e = classifyTlsError(err, { sentOurCert: !!creds, peer: `${host}:${port}` });
        explain();
        if (e.code.startsWith('CERT_') || e.code === 'SERVER_IDENTITY_MISMATCH') {
          const trust = readCertificates(Buffer.from(ca), caFile);
          for (const reason of await explainServerChain({ host, port, trust, ...expect })) say('server chain', reason);
        }
        say('result', `[${e.code}] ${e.message}`);
        if (o.json) printJson({ ok: false, code: e.code, message: e.message, lines });
        process.exitCode = exitCodeOf(e);
      }
    });
}
