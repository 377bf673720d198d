import type { IncomingMessage } from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import type { PeerIdentity } from '../identity/identity.js';
import { identityOf } from '../identity/identity.js';
import type { Decision } from '../identity/policy.js';
import { MtlsError } from '../errors.js';
import type { Certificate } from '../pki/certificate.js';
import { verifyChain } from '../pki/verify.js';
import { peerChain } from '../tls/client.js';
import { authorizationFailure, classifyTlsError } from '../tls/errors.js';
import { stapleFor } from '../tls/stapling.js';
import { enforceHandshakeDeadline, rawSocketOf } from '../tls/server.js';
import type { Limits, ServerListenerConfig } from './config.js';
import type { ListenerContext } from './listener.js';
import { connectOptions, relay } from './relay.js';
import { ServerListenerBase } from './server-base.js';
import { HttpForwarder, type ForwarderHost } from './http-forwarder.js';

const ACCEPTED = Symbol('accepted');
const REMOTE = Symbol('remote');
const TRUST = Symbol('trust generation');
type Stamped = net.Socket & { [ACCEPTED]?: bigint; [REMOTE]?: string; [TRUST]?: number };

/**
 * `mtls proxy server`: terminates mTLS, authorizes the verified peer with the policy, then relays bytes to the
 * target (TCP, optionally behind a PROXY v2 header carrying the identity) or forwards HTTP requests with the
 * identity in X-Forwarded-Client-Cert. Nothing reaches the target before the handshake and the decision.
 */
export class ServerListener extends ServerListenerBase {
  protected readonly server: tls.Server;
  private readonly http: HttpForwarder | undefined;

  constructor(config: ServerListenerConfig, ctx: ListenerContext) {
    super(config, ctx);
    const self = this; // the getters read the live config (a reload replaces it)
    const host: ForwarderHost = {
      get name() {
        return self.name;
      },
      get config() {
        return self.config;
      },
      get log() {
        return self.log;
      },
      metrics: ctx.metrics,
      policy: () => this.policy,
      revocationFailure: (chain) => this.revocationFailure(chain),
      admission: (socket) => this.ocspPending.get(socket as tls.TLSSocket),
    };
    const http =
      config.protocol === 'http' ? new HttpForwarder(host, this.reloader.current.leaf.san?.uri?.[0]) : undefined;
    this.http = http;
    // handshakeTimeout 0: Node's leaves a slowloris connected; enforceHandshakeDeadline closes it.
    // Not allowHalfOpen on the server: a FIN before the handshake must close at once (health probes). Relayed
    // connections turn it on per socket once authorized (see pipeTcp).
    const opts: tls.TlsOptions = { ...this.tlsOptions(this.reloader.current), handshakeTimeout: 0 };
    // connectionsCheckingInterval: Node checks the head deadline this often (its default, 30 s, doubles the wait).
    this.server =
      config.protocol === 'http'
        ? https.createServer({ ...opts, connectionsCheckingInterval: 1000 }, (req, res) => http!.forward(req, res))
        : tls.createServer(opts);
    this.reloader.attach(this.server, (c) => this.tlsOptions(c));
    // Node asks at each handshake whose client wants a staple ('OCSPRequest', naming the certificate in use).
    if (this.stapler) stapleFor(this.server, this.stapler, this.reloader.current.chain);
    this.server.on('connection', (raw: Stamped) => {
      raw[ACCEPTED] = process.hrtime.bigint();
      // Node gives the connection the context current now (its TLS socket is made in an earlier listener).
      raw[TRUST] = this.trustGeneration;
      raw[REMOTE] = `${raw.remoteAddress}:${raw.remotePort}`; // gone once the socket is destroyed
      this.track(raw);
      // A TCP health check connects and closes without a byte: count it, log it only at debug.
      raw.once('close', () => {
        if (raw.bytesRead === 0) this.reportProbe(raw[REMOTE]!);
      });
    });
    enforceHandshakeDeadline(
      this.server,
      () => this.config.limits.handshakeTimeoutMs,
      (raw) => this.handshakeTimedOut(raw),
    );
    this.server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => this.failed(err, s));
    this.server.on('secureConnection', (s: tls.TLSSocket) => this.secured(s));
    if (this.server instanceof https.Server) {
      this.server.keepAliveTimeout = Math.min(config.limits.idleTimeoutMs, 60_000);
      this.server.headersTimeout = config.limits.requestHeadTimeoutMs;
      this.server.requestTimeout = 0; // the body has its own idle deadline (forward)
      this.server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => http!.clientError(err, socket));
      this.server.on('upgrade', (req: IncomingMessage, socket: net.Socket, head: Buffer) =>
        http!.upgrade(req, socket, head),
      );
    }
  }

  protected applyLimits(limits: Limits): void {
    this.server.maxConnections = limits.maxConnections;
    if (this.server instanceof https.Server) this.server.headersTimeout = limits.requestHeadTimeoutMs;
  }

  override destroyAll(): void {
    super.destroyAll();
    this.http?.destroy();
  }

  private handshakeTimedOut(raw: Stamped): void {
    this.reportTimeout(raw[REMOTE] ?? `${raw.remoteAddress}:${raw.remotePort}`);
  }

  private failed(err: Error, s: tls.TLSSocket): void {
    const raw = rawSocketOf<Stamped>(s);
    // With a tlsClientError listener, closing the socket is ours to do.
    s.destroy();
    const remote = raw?.[REMOTE] ?? `${s.remoteAddress}:${s.remotePort}`;
    if ((raw?.bytesRead ?? s.bytesRead) === 0) return; // a probe, counted when it closes
    this.reportFailure(remote, authorizationFailure(s.authorizationError) ?? classifyTlsError(err));
  }

  private secured(s: tls.TLSSocket): void {
    const raw = rawSocketOf<Stamped>(s);
    if (raw?.[ACCEPTED])
      this.reportHandshake(Number(process.hrtime.bigint() - raw[ACCEPTED]) / 1e9, s.isSessionReused());
    const id = identityOf(s);
    const refused = id && this.admissionFailure(s, raw, id);
    if (refused) {
      this.reportFailure(raw?.[REMOTE] ?? `${s.remoteAddress}:${s.remotePort}`, refused);
      s.destroy();
      return;
    }
    if (this.config.clientOcsp && id) {
      // The client's OCSP responder is asked before anything is relayed (TCP) or forwarded (HTTP: its requests wait
      // in forward() for the answer); once admitted, the connection is looked up again every second while it is open
      // (server-base.ts closeOcspRevokedLive).
      const pending = () => undefined;
      s.on('error', pending);
      const http = this.config.protocol === 'http';
      const admitted = this.ocspFailure(s.isSessionReused() ? [id.certificate] : peerChain(s))
        .then((failure) => {
          s.off('error', pending);
          this.ocspPending.delete(s);
          if (s.destroyed) return false;
          if (failure) {
            this.reportFailure(raw?.[REMOTE] ?? `${s.remoteAddress}:${s.remotePort}`, failure);
            s.destroy();
            return false;
          }
          if (!http) this.admitTcp(s, id);
          return true;
        })
        .catch(() => {
          s.destroy(); // an error of ours while deciding: nothing is relayed or forwarded
          return false;
        });
      if (!http) return;
      this.ocspPending.set(s, admitted);
    }
    if (this.config.protocol === 'http') return this.admitHttp(s, id);
    this.admitTcp(s, id);
  }

  /** HTTP connections whose client's OCSP answer is awaited: true once admitted, false when refused (and closed). */
  private readonly ocspPending = new WeakMap<tls.TLSSocket, Promise<boolean>>();

  /** HTTP mode: the policy is decided per request (routes); a connection without a verified identity goes now. */
  private admitHttp(s: tls.TLSSocket, id: PeerIdentity | undefined): void {
    if (!id) return this.deny(s, undefined, 'no verified client certificate');
    this.keepLive(s, id);
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'ok', reason: 'none' });
    s.once('close', () => {
      this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'up' }, s.bytesRead);
      this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'down' }, s.bytesWritten);
    });
  }

  private admitTcp(s: tls.TLSSocket, id: PeerIdentity | undefined): void {
    const decision = this.policy.decide(id);
    if (!decision.allowed || !id) return this.deny(s, id, decision.reason);
    this.reportAllowed(id);
    this.keepLive(s, id);
    this.pipeTcp(s, id, decision);
  }

  /** Admitted connections, while open: a CRL reload closes those it revokes (closeRevokedLive). */
  private readonly admitted = new Map<tls.TLSSocket, { remote: string; certificate: Certificate }>();

  private keepLive(s: tls.TLSSocket, id: PeerIdentity): void {
    this.admitted.set(s, { remote: `${s.remoteAddress}:${s.remotePort}`, certificate: id.certificate });
    s.once('close', () => this.admitted.delete(s));
  }

  protected *liveConnections() {
    for (const [s, a] of this.admitted) yield { ...a, close: () => s.destroy() };
  }

  /**
   * What OpenSSL's verdict leaves to us: revocation, by the CRLs in force; and, when the trust bundle or CRLs were
   * reloaded during the handshake (the connection's context is the one current at its accept, issue 18.1), the
   * chain verified again against the current bundle (a resumed session has no chain: it reconnects).
   */
  private admissionFailure(s: tls.TLSSocket, raw: Stamped | undefined, id: PeerIdentity): MtlsError | undefined {
    if (raw?.[TRUST] === undefined || raw[TRUST] === this.trustGeneration)
      // A full handshake's whole chain when a CRL above the leaf's issuer lists anything (OpenSSL has no CRLs:
      // server-base.ts tlsOptions); else, and for a resumed session (its chain was checked under these CRLs: a CRL
      // reload replaces the ticket keys), the leaf.
      return this.revocationFailure(
        !s.isSessionReused() && this.revocationNeedsChain(id.certificate) ? peerChain(s) : [id.certificate],
      );
    const changed = 'the trust bundle or CRLs changed during the handshake';
    if (s.isSessionReused())
      return new MtlsError('CERT_UNTRUSTED', `${changed} and a resumed session cannot be checked again; reconnect`);
    const chain = peerChain(s);
    const v = verifyChain(chain[0]!, {
      trustAnchors: this.reloader.current.trustAnchors,
      intermediates: chain.slice(1),
      at: new Date(),
      purpose: 'client',
    });
    if (!v.valid)
      return new MtlsError('CERT_UNTRUSTED', `${changed}: ${v.problems[0]?.message ?? 'the chain no longer verifies'}`);
    return this.revocationFailure(v.chain);
  }

  private deny(s: tls.TLSSocket, id: PeerIdentity | undefined, reason: string): void {
    this.reportDenied(`${s.remoteAddress}:${s.remotePort}`, id, reason);
    s.destroy();
  }

  private pipeTcp(s: tls.TLSSocket, id: PeerIdentity, decision: Decision): void {
    const t0 = Date.now();
    const resumed = s.isSessionReused();
    s.allowHalfOpen = true; // the client's half-close ends only the target's write side
    s.pause();
    const target = net.connect(connectOptions(this.config.target));
    const remote = `${s.remoteAddress}:${s.remotePort}`;
    // What the PROXY header says is read now, while the socket is surely open: a client that resets while the
    // target is connecting has a destroyed socket (no cipher, no addresses) before its 'close' is emitted.
    const header = this.proxyHeader({
      source: { address: s.remoteAddress ?? '0.0.0.0', port: s.remotePort ?? 0 },
      destination: { address: s.localAddress ?? '0.0.0.0', port: s.localPort ?? 0 },
      identity: id,
      certInConnection: !resumed,
      tlsVersion: s.getProtocol() ?? undefined,
      cipher: s.getCipher()?.standardName,
      ...(s.alpnProtocol ? { alpn: s.alpnProtocol } : {}),
      ...((s as unknown as { servername?: string }).servername
        ? { sni: (s as unknown as { servername: string }).servername }
        : {}),
    });
    // The client left while the target was connecting: do not keep the target connection.
    const gone = () => {
      if (target.connecting) target.destroy();
    };
    s.once('close', gone);
    target.once('error', (err: NodeJS.ErrnoException) => {
      if (target.connecting || !target.remoteAddress) {
        this.reportUnreachable(remote, err.code);
        s.destroy();
      }
    });
    target.once('connect', () => {
      s.off('close', gone);
      if (s.destroyed) {
        // Destroyed (reset, or closed by a CRL reload) but its 'close' not yet emitted: end the target too.
        target.destroy();
        this.reportRelayed({
          remote,
          id,
          decision,
          resumed,
          up: 0,
          down: 0,
          durationMs: Date.now() - t0,
          why: 'client gone',
        });
        return;
      }
      if (header) target.write(header);
      relay(s, target, this.config.limits, (stats, why) => {
        this.reportRelayed({
          remote,
          id,
          decision,
          resumed,
          up: stats.up,
          down: stats.down,
          durationMs: Date.now() - t0,
          why,
        });
      });
      s.resume();
    });
  }
}
