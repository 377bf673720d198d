import net from 'node:net';
import tls from 'node:tls';
import { identityFromCertificate } from '../identity/identity.js';
import { parseCertificate } from '../pki/certificate.js';
import { isIpLiteral } from '../pki/names.js';
import type { Credentials } from '../tls/credentials.js';
import { classifyTlsError } from '../tls/errors.js';
import { checkServerIdentity, clientTlsOptions, type ServerExpectation } from '../tls/options.js';
import { checkStaple, collectStaple } from '../tls/stapling.js';
import { rememberSessions, serverIdentityOf } from '../tls/session-identity.js';
import type { ClientListenerConfig } from './config.js';
import { Listener, type ListenerContext } from './listener.js';
import { relay } from './relay.js';
import { describePeer as who } from '../identity/policy.js';

/**
 * `mtls proxy client`: plaintext in (from a local program), mTLS out to the target, verifying the server's
 * identity (SPIFFE ID or name, from DER, also on resumed sessions). One secure context for all connections and
 * the latest session ticket reused, so most connections skip the full handshake. The local client's bytes
 * wait until the server is verified.
 */
export class ClientListener extends Listener<ClientListenerConfig> {
  protected readonly server: net.Server;
  private context: tls.SecureContext;
  private session: Buffer | undefined;

  constructor(config: ClientListenerConfig, ctx: ListenerContext) {
    super(config, ctx);
    this.context = this.build(this.reloader.current);
    this.reloader.on('reloaded', (e: { trustChanged: boolean }) => {
      this.context = this.build(this.reloader.current);
      if (e.trustChanged) this.session = undefined;
    });
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (plain) => this.accept(plain));
  }

  private get expect(): ServerExpectation {
    return {
      ...(this.config.expectSpiffeId ? { spiffeId: this.config.expectSpiffeId } : {}),
      ...(this.config.servername ? { servername: this.config.servername } : {}),
    };
  }

  private build(c: Credentials): tls.SecureContext {
    return tls.createSecureContext(clientTlsOptions(c, c.ca, this.expect));
  }

  update(next: ClientListenerConfig): void {
    this.config = {
      ...next,
      listen: this.config.listen,
      cert: this.config.cert,
      key: this.config.key,
      ca: this.config.ca,
    };
    this.context = this.build(this.reloader.current);
    this.session = undefined;
    this.log.info({ event: 'config-reloaded' }, 'listener settings reloaded');
  }

  private accept(plain: net.Socket): void {
    this.track(plain);
    const remote = `${plain.remoteAddress}:${plain.remotePort}`;
    const t0 = process.hrtime.bigint();
    const { host, port } = this.config.target;
    const expect = this.expect;
    const servername = expect.servername ?? host;
    // allowHalfOpen works on tls.connect (the socket keeps writing after the server's end) but is not in the types.
    const upstream = tls.connect({
      host,
      port,
      secureContext: this.context,
      rejectUnauthorized: true,
      ...({ allowHalfOpen: true } as tls.ConnectionOptions),
      ...(isIpLiteral(servername) ? {} : { servername }),
      ...(this.session ? { session: this.session } : {}),
      ...(this.config.staple ? { requestOCSP: true } : {}),
      checkServerIdentity: (h: string, cert: tls.PeerCertificate) =>
        checkServerIdentity(identityFromCertificate(parseCertificate(cert.raw, 'server certificate')), h, expect),
    });
    this.track(upstream);
    const staple = this.config.staple ? collectStaple(upstream) : () => undefined;
    upstream.on('session', (s: Buffer) => {
      this.session = s;
    });
    // A key log line means the server answered our ClientHello (TLS 1.3: its ServerHello; 1.2: our key exchange).
    let answered = false;
    upstream.once('keylog', () => {
      answered = true;
    });
    const timer = setTimeout(
      () => upstream.destroy(Object.assign(new Error('handshake timed out'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' })),
      this.config.limits.handshakeTimeoutMs,
    );
    const fail = (err: Error) => {
      clearTimeout(timer);
      const e =
        (err as NodeJS.ErrnoException).code === 'ERR_TLS_HANDSHAKE_TIMEOUT'
          ? {
              code: 'HANDSHAKE_TIMEOUT',
              message: `no finished handshake within ${this.config.limits.handshakeTimeoutMs} ms`,
            }
          : classifyTlsError(err, { sentOurCert: answered, unanswered: !answered, peer: `${host}:${port}` });
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: e.code });
      this.log.warn(
        { event: 'handshake-failed', target: `${host}:${port}`, code: e.code, reason: e.message },
        'upstream handshake failed',
      );
      this.session = undefined;
      upstream.destroy();
      plain.destroy();
    };
    upstream.once('error', fail);
    plain.once('error', () => upstream.destroy());
    let secured = false;
    // The local client gave up before the server was verified: nothing to relay.
    plain.once('close', () => {
      if (!secured) upstream.destroy();
    });
    upstream.once('secureConnect', () => {
      secured = true;
      clearTimeout(timer);
      const server = serverIdentityOf(upstream);
      const mismatch = server ? checkServerIdentity(server, host, expect) : undefined;
      if (!server || mismatch) {
        return fail(
          mismatch ??
            Object.assign(new Error('resumed a session whose server identity was never verified here'), {
              code: 'SERVER_IDENTITY_MISMATCH',
            }),
        );
      }
      const stapled = this.config.staple ? checkStaple(upstream, staple(), this.config.staple).error : undefined;
      if (stapled) return fail(stapled);
      rememberSessions(upstream, server);
      upstream.off('error', fail);
      this.ctx.metrics.handshakeSeconds.observe({ listener: this.name }, Number(process.hrtime.bigint() - t0) / 1e9);
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'ok', reason: 'none' });
      const resumed = upstream.isSessionReused();
      if (resumed) this.ctx.metrics.resumed.inc({ listener: this.name });
      const started = Date.now();
      relay(plain, upstream, this.config.limits, (stats, why) => {
        this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'up' }, stats.up);
        this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'down' }, stats.down);
        this.log.info(
          {
            event: 'connection',
            remote,
            server: who(server),
            resumed,
            bytesUp: stats.up,
            bytesDown: stats.down,
            durationMs: Date.now() - started,
            closed: why,
          },
          'connection closed',
        );
      });
      plain.resume();
    });
  }
}
