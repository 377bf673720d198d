import type { Command } from 'commander';
import { explainRequest, explainServerChain } from '../doctor/explain.js';
import { MtlsError, exitCodeOf } from '../errors.js';
import { identityJson } from '../identity/identity.js';
import { readCertificates } from '../pki/certificate.js';
import { verifyChain } from '../pki/verify.js';
import { certLabel } from '../pki/path-rules.js';
import { connectMtls } from '../tls/client.js';
import type { StapleMode } from '../tls/stapling.js';
import { chainRevocation } from '../tls/chain-revocation.js';
import { Capture } from '../tls/capture.js';
import { loadCredentials } from '../tls/credentials.js';
import { classifyTlsError } from '../tls/errors.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { parseHostPort } from '../io/address.js';
import { authorizationRefusal, describeAnswer, httpProbe } from '../doctor/http-probe.js';
import { caFileOr, optionalPassphrase, printJson } from './common.js';

interface ConnectFlags {
  cert?: string;
  key?: string;
  ca?: string;
  servername?: string;
  expectSpiffeId?: string;
  home?: string;
  keyPassphraseFile?: string;
  wait: string;
  http?: string | boolean;
  staple: string;
  json?: boolean;
}

export function registerConnect(program: Command): void {
  program
    .command('connect <hostport>')
    .description(
      'connect with mTLS and explain the result; exit 0 accepted, 1 server failed ' +
        'our checks, 3 server rejected us, 4 unreachable',
    )
    .option('--cert <file>', 'our client certificate chain')
    .option('--key <file>', 'our key')
    .option('--ca <file>', 'trusted CA bundle for the server (default: the CA home ca.crt)')
    .option('--servername <name>', 'name to send (SNI) and check (default: the host)')
    .option('--expect-spiffe-id <uri>', 'check the server SPIFFE ID (pattern) instead of its DNS name')
    .option('--wait <ms>', 'TLS 1.3: how long to wait for the server to reject our certificate', '500')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--key-passphrase-file <file>', 'passphrase of --key')
    .option(
      '--http [path]',
      'then send GET PATH (default /) and report the answer; a 401 or 403 is NOT_AUTHORIZED (exit 3)',
    )
    .option(
      '--staple <mode>',
      "the server's stapled OCSP status: request (check it if sent), require (refuse a server without), off",
      'request',
    )
    .option('--json', 'machine-readable output')
    .action(async (target: string, o: ConnectFlags) => {
      if (!['request', 'require', 'off'].includes(o.staple))
        throw new MtlsError('USAGE', `--staple '${o.staple}' must be request, require or off`);
      const { host, port } = parseHostPort(target);
      if ((o.cert === undefined) !== (o.key === undefined))
        throw new MtlsError(
          'USAGE',
          'give both --cert and --key, or neither (to connect without a client certificate)',
        );
      if (!/^\d{1,5}$/.test(o.wait)) throw new MtlsError('USAGE', `--wait '${o.wait}' must be milliseconds`);
      const caFile = caFileOr(o.ca, o.home);
      const passphrase = optionalPassphrase(o.keyPassphraseFile);
      const creds =
        o.cert && o.key
          ? loadCredentials({
              certFile: o.cert,
              keyFile: o.key,
              caFile,
              ...(passphrase !== undefined ? { passphrase } : {}),
            })
          : undefined;
      const ca = readInput(caFile, 'CA bundle', MAX_INPUT.bundle).toString('utf8');
      const expect = {
        ...(o.servername ? { servername: o.servername } : {}),
        ...(o.expectSpiffeId ? { spiffeId: o.expectSpiffeId } : {}),
      };
      const lines: [string, string][] = [];
      const say = (k: string, v: string) => {
        lines.push([k, v]);
        if (!o.json) console.log(`  ${k.padEnd(14)}${v}`);
      };
      if (!o.json)
        console.log(
          `connecting to ${host}:${port}${creds ? ` as '${certLabel(creds.leaf)}'` : ' without a client certificate'}`,
        );
      const capture = new Capture();
      const explain = () => {
        const r = explainRequest(capture);
        if (r.certificate === 'asked') {
          const cas = r.acceptableCas.length ? r.acceptableCas.join(' | ') : 'any';
          say(
            'server asked',
            `for a client certificate (signature algorithms: ${r.signatureAlgorithms.join(', ') || 'any'}; ` +
              `acceptable CAs: ${cas})`,
          );
        } else if (r.certificate === 'not asked' || r.notes.length) {
          say(
            'server asked',
            r.notes.length
              ? `(could not read the encrypted flight: ${r.notes.join('; ')})`
              : 'for no client certificate',
          );
        }
        for (const a of r.alerts) say('server alert', `${a}${r.decrypted ? ' (decrypted)' : ''}`);
        return r;
      };
      try {
        const c = await connectMtls({
          host,
          port,
          ca,
          expect,
          confirmMs: Number(o.wait),
          capture,
          ...(creds ? { credentials: creds } : {}),
          ...(o.staple !== 'off' ? { staple: o.staple as StapleMode } : {}),
        });
        const eph = c.socket.getEphemeralKeyInfo() as { name?: string; type?: string } | null;
        say(
          'protocol',
          `${c.socket.getProtocol()} ${c.socket.getCipher().standardName}, key exchange ` +
            `${eph?.name ?? eph?.type ?? 'n/a (resumed)'}`,
        );
        const chain = c.chain;
        const anchors = readCertificates(Buffer.from(ca), caFile);
        const verdict = verifyChain(chain[0]!, {
          trustAnchors: anchors,
          intermediates: chain.slice(1),
          at: new Date(),
          purpose: 'server',
        });
        say(
          'server chain',
          `${verdict.valid ? 'verified' : 'NOT verified'}: ${verdict.chain.map((x) => `'${certLabel(x)}'`).join(' <- ')}`,
        );
        // OpenSSL accepted the chain; say what the strict profile (mtls verify) refuses in it.
        if (!verdict.valid) say('strict check', verdict.problems.map((p) => p.message).join('; '));
        // Each certificate of the chain: the leaf from its staple (or its responder), the CAs from their CRLs.
        const revocation =
          o.staple !== 'off' && !c.resumed
            ? await chainRevocation(
                verdict.valid ? verdict.chain : chain,
                anchors,
                c.staple ? { staple: c.staple } : {},
              )
            : [];
        for (const r of revocation)
          say('revocation', `'${certLabel(r.certificate)}' ${r.status}: ${r.source}${r.why ? `: ${r.why}` : ''}`);
        const revoked = revocation.find((r) => r.status === 'revoked');
        if (revoked) {
          c.socket.destroy();
          throw new MtlsError(
            'CERT_REVOKED',
            `${host}:${port}: the server's certificate '${certLabel(revoked.certificate)}' is revoked (${revoked.source})`,
          );
        }
        explain();
        const names = [...c.server.dns.map((d) => `DNS:${d}`), ...c.server.ips.map((i) => `IP:${i}`)].join(', ');
        say(
          'server',
          `${c.server.spiffeId ? c.server.spiffeId.uri + ' ' : ''}${names} ` +
            `(${o.expectSpiffeId ? `matches ${o.expectSpiffeId}` : `valid for '${o.servername ?? host}'`})`,
        );
        say(
          'our cert',
          creds
            ? `'${certLabel(creds.leaf)}' sent and accepted${c.socket.getProtocol() === 'TLSv1.3' ? ` (no rejection within ${o.wait} ms)` : ''}`
            : 'none sent; the server did not require one',
        );
        if (o.http !== undefined) {
          const path = typeof o.http === 'string' ? o.http : '/';
          if (!path.startsWith('/') || /[\s\x00-\x1f]/.test(path)) {
            throw new MtlsError('USAGE', `--http '${path}' must be a path such as /healthz`);
          }
          const h = await httpProbe(c.socket, o.servername ?? host, path, 3000);
          say('http', h.answer ? describeAnswer(h.answer) : 'no HTTP answer');
          const refusal = h.answer && authorizationRefusal(h.answer);
          if (refusal) {
            c.socket.destroy();
            throw new MtlsError('NOT_AUTHORIZED', `${host}:${port}: ${refusal}`);
          }
        }
        say('result', 'mutual TLS established');
        if (o.json)
          printJson({
            ok: true,
            protocol: c.socket.getProtocol(),
            cipher: c.socket.getCipher().standardName,
            server: identityJson(c.server),
            resumed: c.resumed,
            revocation: revocation.map((r) => ({
              certificate: certLabel(r.certificate),
              serial: r.certificate.serialHex,
              status: r.status,
              source: r.source,
              ...(r.why ? { why: r.why } : {}),
            })),
            staple: c.staple
              ? {
                  status: c.staple.status,
                  signedBy: c.staple.signedBy,
                  nextUpdate: c.staple.nextUpdate?.toISOString() ?? null,
                }
              : null,
            lines,
          });
        c.socket.destroy();
      } catch (err) {
        const e = classifyTlsError(err, { sentOurCert: !!creds, peer: `${host}:${port}` });
        const seen = explain();
        if (e.code === 'PEER_CLOSED_AFTER_OUR_CERT' && seen.closedGracefully) {
          // Issue 16: a server that finishes the handshake and closes with close_notify accepted us; it said so.
          const d = e.details as { protocol?: string; cipher?: string } | undefined;
          say('protocol', `${d?.protocol ?? 'TLS'}${d?.cipher ? ` ${d.cipher}` : ''}`);
          say(
            'our cert',
            creds ? `'${certLabel(creds.leaf)}' sent and accepted` : 'none sent; the server did not require one',
          );
          say('result', 'mutual TLS established; then the server closed the connection (close_notify, no alert)');
          if (o.json)
            printJson({
              ok: true,
              protocol: d?.protocol ?? null,
              cipher: d?.cipher ?? null,
              closedByServer: true,
              lines,
            });
          return;
        }
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
