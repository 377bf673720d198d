import dns from 'node:dns/promises';
import net from 'node:net';
import { messageOf } from '../errors.js';
import type { PeerIdentity } from '../identity/identity.js';
import { identityForDer } from '../identity/identity.js';
import { compilePolicy, describePeer as who, type Policy } from '../identity/policy.js';
import { authorizationFailure, classifyTlsError } from '../tls/errors.js';
import { serverTlsOptions } from '../tls/options.js';
import type { Credentials } from '../tls/credentials.js';
import { readInput } from '../util/fs.js';
import { formatAddress, type ServerListenerConfig } from './config.js';
import { Listener, type ListenerContext } from './listener.js';
import { NativeEngine, type ClosedEvent, type SecuredEvent } from './native.js';
import { encodeProxyV2 } from './proxy-protocol.js';

interface Conn {
  remote: string;
  source: { address: string; port: number };
  destination: { address: string; port: number };
  accepted: bigint;
  /** Set once admitted. */
  identity?: PeerIdentity;
  reason?: string;
  audit?: boolean;
  resumed?: boolean;
  admittedAt?: number;
}

/**
 * `mtls proxy server` in TCP mode on the native engine (native/relay.cc): Node accepts the TCP connection and
 * hands its descriptor to the engine's thread, which does the TLS handshake (OpenSSL verifies the client chain,
 * purpose clientAuth, CRLs) and, once this listener has applied the policy to the verified certificate, connects
 * to the target and relays the bytes. Nothing reaches the target before the decision. Same limits, metrics, logs,
 * reload and PROXY v2 header as the Node engine (server-listener.ts).
 */
export class NativeServerListener extends Listener<ServerListenerConfig> {
  protected readonly server: net.Server;
  private readonly native: NativeEngine;
  private policy: Policy;
  private readonly conns = new Map<number, Conn>();
  private target: string;
  private stopped = false;

  constructor(config: ServerListenerConfig, ctx: ListenerContext) {
    super(config, ctx);
    this.policy = compilePolicy(config.policy);
    this.native = new NativeEngine((e) => (e.type === 'secured' ? this.secured(e) : this.closed(e)), ctx.threads ?? 1);
    this.native.setSecureContext(this.tlsOptions(this.reloader.current));
    this.native.setLimits(config.limits);
    this.reloader.attach(this.native, (c) => this.tlsOptions(c));
    this.target = formatAddress(config.target);
    // pauseOnConnect: Node never reads from the socket; the engine takes a duplicate of its descriptor.
    this.server = net.createServer({ pauseOnConnect: true }, (s) => this.accept(s));
  }

  private tlsOptions(c: Credentials): ReturnType<typeof serverTlsOptions> {
    const o = serverTlsOptions(c);
    if (this.config.crl) o.crl = readInput(this.config.crl, 'CRL file');
    return o;
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
      this.target = formatAddress({ host: address, port: t.port });
    }
    // Node's own count (server.maxConnections) stays near 0, as every socket is handed over at once: the limit
    // is checked in accept() against the engine's connections.
    await super.start();
  }

  update(next: ServerListenerConfig): void {
    this.policy = compilePolicy(next.policy);
    this.config = { ...next, listen: this.config.listen, target: this.config.target, cert: this.config.cert, key: this.config.key, ca: this.config.ca };
    this.native.setLimits(next.limits);
    this.log.info({ event: 'policy-reloaded', allow: next.policy.allow, deny: next.policy.deny ?? [] }, 'policy reloaded');
  }

  override async stopAccepting(): Promise<void> {
    await super.stopAccepting();
    this.stopped = true;
    if (this.conns.size === 0) this.native.destroy();
  }

  override destroyAll(): void {
    this.native.closeAll();
  }

  private accept(s: net.Socket): void {
    const remote = `${s.remoteAddress}:${s.remotePort}`;
    if (this.conns.size >= this.config.limits.maxConnections) {
      s.destroy();
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: 'MAX_CONNECTIONS' });
      this.log.warn({ event: 'dropped', remote, reason: `maxConnections ${this.config.limits.maxConnections} reached` }, 'connection refused: too many connections');
      return;
    }
    let id: number;
    try {
      const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
      if (fd === undefined || fd < 0) throw new Error('the accepted socket has no descriptor');
      id = this.native.add(fd); // dup(): fails with EMFILE when the process is out of descriptors
    } catch (err) {
      s.destroy();
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: 'ACCEPT_FAILED' });
      this.log.error({ event: 'accept-failed', remote, reason: messageOf(err) }, `connection dropped: ${messageOf(err)}`);
      return;
    }
    this.conns.set(id, {
      remote, accepted: process.hrtime.bigint(),
      source: { address: s.remoteAddress ?? '0.0.0.0', port: s.remotePort ?? 0 }, destination: { address: s.localAddress ?? '0.0.0.0', port: s.localPort ?? 0 },
    });
    this.ctx.metrics.active.inc({ listener: this.name });
    s.destroy(); // closes Node's descriptor; the engine holds its own duplicate
  }

  private secured(e: SecuredEvent): void {
    const c = this.conns.get(e.id);
    if (!c) return;
    this.ctx.metrics.handshakeSeconds.observe({ listener: this.name }, Number(process.hrtime.bigint() - c.accepted) / 1e9);
    if (e.resumed) this.ctx.metrics.resumed.inc({ listener: this.name });
    let id: PeerIdentity | undefined;
    try {
      id = e.der ? identityForDer(e.der) : undefined; // parsed once per certificate (cached by its bytes)
    } catch {
      id = undefined; // verified by OpenSSL but not parseable by us: no identity, so denied
    }
    const decision = this.policy.decide(id);
    if (!decision.allowed || !id) {
      this.native.reject(e.id);
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'denied', reason: 'PEER_NOT_ALLOWED' });
      this.log.info({ event: 'denied', remote: c.remote, identity: id ? who(id) : null, decision: 'deny', reason: decision.reason }, 'denied');
      return;
    }
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'ok', reason: 'none' });
    this.ctx.metrics.perIdentity.inc({ listener: this.name, identity: this.ctx.metrics.identityLabel(who(id)) });
    Object.assign(c, { identity: id, reason: decision.reason, audit: decision.auditOnly === true, resumed: e.resumed, admittedAt: Date.now() });
    const header = this.config.proxyProtocol
      ? encodeProxyV2({
        source: c.source, destination: c.destination, identity: id, certInConnection: !e.resumed, tlsVersion: e.version, cipher: e.cipher,
        ...(e.servername ? { sni: e.servername } : {}), includeCertificate: this.config.proxyProtocolCertificate,
      })
      : undefined;
    this.native.admit(e.id, this.target, header);
  }

  private closed(e: ClosedEvent): void {
    const c = this.conns.get(e.id);
    if (!c) return;
    this.conns.delete(e.id);
    this.ctx.metrics.active.dec({ listener: this.name });
    if (this.stopped && this.conns.size === 0) setImmediate(() => this.native.destroy());
    const name = this.name;
    if (e.stage === 'handshake') {
      if (e.why === 'HANDSHAKE_TIMEOUT') {
        this.ctx.metrics.handshakes.inc({ listener: name, result: 'failed', reason: 'HANDSHAKE_TIMEOUT' });
        this.log.warn({ event: 'handshake-failed', remote: c.remote, code: 'HANDSHAKE_TIMEOUT', reason: `no finished handshake within ${this.config.limits.handshakeTimeoutMs} ms` }, 'handshake timed out');
      } else if (e.bytesIn === 0) {
        // A TCP health check connects and closes without a byte: count it, log it only at debug.
        this.ctx.metrics.handshakes.inc({ listener: name, result: 'probe', reason: 'NO_DATA' });
        this.log.debug({ event: 'probe', remote: c.remote }, 'connection closed before any TLS byte (health check?)');
      } else if (e.why !== 'drain timeout') {
        const err = e.why === 'verify failed' ? authorizationFailure(e.code)! : classifyTlsError(Object.assign(new Error(e.reason || e.code), { code: e.code, reason: e.reason }));
        this.ctx.metrics.handshakes.inc({ listener: name, result: 'failed', reason: err.code });
        this.log.warn({ event: 'handshake-failed', remote: c.remote, code: err.code, reason: err.message }, 'handshake failed');
      }
      return;
    }
    if (e.stage === 'connecting' && e.code === 'TARGET_UNREACHABLE') {
      this.log.error({ event: 'target-unreachable', remote: c.remote, target: this.config.target, code: e.why }, `target unreachable (${e.why})`);
      return;
    }
    if (e.stage !== 'relay' || !c.identity) return; // denied (logged then) or gone before the target answered
    this.ctx.metrics.bytes.inc({ listener: name, direction: 'up' }, e.up);
    this.ctx.metrics.bytes.inc({ listener: name, direction: 'down' }, e.down);
    this.log.info({ event: 'connection', remote: c.remote, identity: who(c.identity), decision: c.audit ? 'audit' : 'allow', reason: c.reason, resumed: c.resumed, bytesUp: e.up, bytesDown: e.down, durationMs: Date.now() - (c.admittedAt ?? Date.now()), closed: e.why }, 'connection closed');
  }
}
