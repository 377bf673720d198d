import dns from 'node:dns/promises';
import net from 'node:net';
import { messageOf } from '../errors.js';
import type { PeerIdentity } from '../identity/identity.js';
import { identityForDer } from '../identity/identity.js';
import type { Decision } from '../identity/policy.js';
import { authorizationFailure, classifyTlsError } from '../tls/errors.js';
import type { Address } from '../io/address.js';
import type { Limits, ServerListenerConfig } from './config.js';
import type { ListenerContext } from './listener.js';
import type { Crl } from '../pki/crl.js';
import { parseCertificate } from '../pki/certificate.js';
import type { ReloadEvent } from '../tls/reload.js';
import { stapledPair } from '../tls/stapling.js';
import type { serverTlsOptions } from '../tls/options.js';
import { encodeRevocations, NativeEngine, type ClosedEvent, type SecuredEvent } from './native.js';
import { ServerListenerBase } from './server-base.js';

interface Conn {
  remote: string;
  source: { address: string; port: number };
  destination: { address: string; port: number };
  accepted: bigint;
  /** Set once admitted. */
  admitted?: { id: PeerIdentity; decision: Decision; resumed: boolean; at: number };
}

/**
 * `mtls proxy server` in TCP mode on the native engine (native/): Node accepts the TCP connection and
 * hands its descriptor to the engine's thread, which does the TLS handshake (OpenSSL verifies the client chain,
 * purpose clientAuth; its verify callback looks each certificate up in the CRLs' hash sets) and, once this listener has applied the policy to the verified certificate, connects
 * to the target and relays the bytes. Nothing reaches the target before the decision. Same limits, metrics, logs,
 * reload and PROXY v2 header as the Node engine (server-listener.ts).
 */
export class NativeServerListener extends ServerListenerBase {
  protected readonly server: net.Server;
  private readonly native: NativeEngine;
  private readonly conns = new Map<number, Conn>();
  private target: Address;
  private stopped = false;

  constructor(config: ServerListenerConfig, ctx: ListenerContext) {
    super(config, ctx);
    this.native = new NativeEngine((e) => (e.type === 'secured' ? this.secured(e) : this.closed(e)), ctx.threads ?? 1);
    this.native.setSecureContext(this.tlsOptions(this.reloader.current));
    this.native.setLimits(config.limits);
    this.native.reportIssuer(config.clientOcsp === true);
    this.reloader.attach(this.native, (c) => this.tlsOptions(c));
    this.target = config.target;
    if (this.stapler) {
      // The engine holds the staple: it is set when fetched for the certificate in use, and cleared when the
      // certificate changes (until the new one's arrives) or the response expires.
      const stapler = this.stapler;
      const prime = () => void stapler.prime(...stapledPair(this.reloader.current.chain)).catch(() => undefined);
      prime();
      this.reloader.on('reloaded', (e: ReloadEvent) => {
        if (e.fingerprint256 === this.stapledFor) return;
        this.native.setStaple(null);
        prime();
      });
      this.stapledFor = this.reloader.current.leaf.fingerprint256;
    }
    // pauseOnConnect: Node never reads from the socket; the engine takes a duplicate of its descriptor.
    this.server = net.createServer({ pauseOnConnect: true }, (s) => this.accept(s));
  }

  override get engine(): 'native' {
    return 'native';
  }

  override get active(): number {
    return this.conns.size;
  }

  override async start(): Promise<void> {
    const t = this.config.target;
    // The engine connects to an IP address: a host name (localhost) is looked up once, here.
    if (!('path' in t) && net.isIP(t.host) === 0) {
      const { address } = await dns.lookup(t.host);
      this.target = { host: address, port: t.port };
    }
    await super.start();
  }

  /** The fingerprint of the certificate whose staple the engine may hold. */
  private stapledFor: string | undefined;

  protected override stapled(certificate: Buffer, der: Buffer | null): void {
    const leaf = this.reloader.current.leaf;
    if (!certificate.equals(leaf.der)) return;
    this.stapledFor = leaf.fingerprint256;
    this.native.setStaple(der);
  }

  /** The CRLs as hash sets the engine's verify callback looks each certificate of a client chain up in. */
  protected override withRevocations(o: ReturnType<typeof serverTlsOptions>, crls: readonly Crl[]) {
    return { ...o, revoked: encodeRevocations(crls) };
  }

  protected applyLimits(limits: Limits): void {
    this.native.setLimits(limits);
  }

  override update(next: ServerListenerConfig): void {
    super.update(next);
    this.native.reportIssuer(this.config.clientOcsp === true);
  }

  protected *liveConnections() {
    for (const [id, c] of this.conns)
      if (c.admitted)
        yield { remote: c.remote, certificate: c.admitted.id.certificate, close: () => this.native.close(id) };
  }

  override async stopAccepting(): Promise<void> {
    await super.stopAccepting();
    this.stapler?.close();
    this.stopped = true;
    if (this.conns.size === 0) this.native.destroy();
  }

  override destroyAll(): void {
    this.native.closeAll();
  }

  private accept(s: net.Socket): void {
    const remote = `${s.remoteAddress}:${s.remotePort}`;
    // Node's own count (server.maxConnections) stays near 0, as every socket is handed over at once: the limit is
    // checked here against the engine's connections.
    if (this.conns.size >= this.config.limits.maxConnections) {
      s.destroy();
      return this.reportDropped(remote);
    }
    let id: number;
    try {
      const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (fd === undefined || fd < 0) throw new Error('the accepted socket has no descriptor');
      id = this.native.add(fd); // dup(): fails with EMFILE when the process is out of descriptors
    } catch (err) {
      s.destroy();
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: 'ACCEPT_FAILED' });
      this.log.error(
        { event: 'accept-failed', remote, reason: messageOf(err) },
        `connection dropped: ${messageOf(err)}`,
      );
      return;
    }
    this.conns.set(id, {
      remote,
      accepted: process.hrtime.bigint(),
      source: { address: s.remoteAddress ?? '0.0.0.0', port: s.remotePort ?? 0 },
      destination: { address: s.localAddress ?? '0.0.0.0', port: s.localPort ?? 0 },
    });
    this.ctx.metrics.active.inc({ listener: this.name });
    s.destroy(); // closes Node's descriptor; the engine holds its own duplicate
  }

  private secured(e: SecuredEvent): void {
    const c = this.conns.get(e.id);
    if (!c) return;
    this.reportHandshake(Number(process.hrtime.bigint() - c.accepted) / 1e9, e.resumed);
    let id: PeerIdentity | undefined;
    try {
      id = e.der ? identityForDer(e.der) : undefined; // parsed once per certificate (cached by its bytes)
    } catch {
      id = undefined; // verified by OpenSSL but not parseable by us: no identity, so denied
    }
    const revoked = id && this.revocationFailure([id.certificate]);
    if (revoked) {
      this.native.reject(e.id);
      this.reportFailure(c.remote, revoked);
      return;
    }
    if (this.config.clientOcsp && id) {
      // The engine holds the connection (stage 'deciding', under the handshake deadline) while the client's OCSP
      // responder is asked, with the issuer OpenSSL verified it with.
      const chain = [id.certificate, ...(e.issuer ? [parseCertificate(e.issuer)] : [])];
      void this.ocspFailure(chain).then((failure) => {
        if (this.conns.get(e.id) !== c) return; // closed meanwhile
        if (!failure) return this.decide(e, c, id);
        this.native.reject(e.id);
        this.reportFailure(c.remote, failure);
      });
      return;
    }
    this.decide(e, c, id);
  }

  private decide(e: SecuredEvent, c: Conn, id: PeerIdentity | undefined): void {
    const decision = this.policy.decide(id);
    if (!decision.allowed || !id) {
      this.native.reject(e.id);
      this.reportDenied(c.remote, id, decision.reason);
      return;
    }
    this.reportAllowed(id);
    c.admitted = { id, decision, resumed: e.resumed, at: Date.now() };
    const header = this.proxyHeader({
      source: c.source,
      destination: c.destination,
      identity: id,
      certInConnection: !e.resumed,
      tlsVersion: e.version,
      cipher: e.cipher,
      ...(e.servername ? { sni: e.servername } : {}),
    });
    this.native.admit(e.id, this.target, header);
  }

  private closed(e: ClosedEvent): void {
    const c = this.conns.get(e.id);
    if (!c) return;
    this.conns.delete(e.id);
    this.ctx.metrics.active.dec({ listener: this.name });
    if (this.stopped && this.conns.size === 0) setImmediate(() => this.native.destroy());
    if (e.stage === 'handshake') {
      if (e.reason === 'handshake timeout') this.reportTimeout(c.remote);
      else if (e.bytesIn === 0) this.reportProbe(c.remote);
      else if (e.reason === 'verify failed') this.reportFailure(c.remote, authorizationFailure(e.code)!);
      else if (e.reason !== 'drain timeout' && e.reason !== 'engine stopped') {
        const err = Object.assign(new Error(e.detail || e.code), { code: e.code, reason: e.detail });
        this.reportFailure(c.remote, classifyTlsError(err));
      }
      return;
    }
    if (e.reason === 'target unreachable') return this.reportUnreachable(c.remote, e.code);
    // Not relayed: denied (reported then) or gone before the target answered.
    if (e.stage === 'relay' && c.admitted) {
      const a = c.admitted;
      const why = e.reason === 'io error' ? e.code : e.reason;
      this.reportRelayed({
        remote: c.remote,
        id: a.id,
        decision: a.decision,
        resumed: a.resumed,
        up: e.up,
        down: e.down,
        durationMs: Date.now() - a.at,
        why,
      });
    }
  }
}
