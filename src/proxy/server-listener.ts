import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { answerClientError, authorizeRequest, sendForbidden, type RequestMtls } from '../http/authorize.js';
import type { PathOptions } from '../identity/request-target.js';
import type { PeerIdentity } from '../identity/identity.js';
import { identityOf } from '../identity/identity.js';
import { describePeer as who, type Decision } from '../identity/policy.js';
import { MtlsError } from '../errors.js';
import { verifyChain } from '../pki/verify.js';
import { peerChain } from '../tls/client.js';
import { authorizationFailure, classifyTlsError } from '../tls/errors.js';
import { enforceHandshakeDeadline, rawSocketOf } from '../tls/server.js';
import type { Limits, ServerListenerConfig } from './config.js';
import type { ListenerContext } from './listener.js';
import { connectOptions, relay } from './relay.js';
import { ServerListenerBase } from './server-base.js';
import { answer, forwardedHeaders, responseHeaders } from './forwarded-headers.js';

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
  private agent: http.Agent;
  private readonly by: string | undefined;

  private get pathOptions(): PathOptions {
    return { mergeSlashes: this.config.mergeSlashes };
  }

  constructor(config: ServerListenerConfig, ctx: ListenerContext) {
    super(config, ctx);
    this.agent = new http.Agent({ keepAlive: true, maxSockets: 512 });
    // handshakeTimeout 0: Node's leaves a slowloris connected; enforceHandshakeDeadline closes it.
    // Not allowHalfOpen on the server: a FIN before the handshake must close at once (health probes). Relayed
    // connections turn it on per socket once authorized (see pipeTcp).
    const opts: tls.TlsOptions = { ...this.tlsOptions(this.reloader.current), handshakeTimeout: 0 };
    // connectionsCheckingInterval: Node checks the head deadline this often (its default, 30 s, doubles the wait).
    this.server =
      config.protocol === 'http'
        ? https.createServer({ ...opts, connectionsCheckingInterval: 1000 }, (req, res) => this.forward(req, res))
        : tls.createServer(opts);
    this.reloader.attach(this.server, (c) => this.tlsOptions(c));
    this.by = this.reloader.current.leaf.san?.uri?.[0];
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
      this.server.on('clientError', (err: NodeJS.ErrnoException, socket: net.Socket) => this.clientError(err, socket));
      this.server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) =>
        this.upgrade(req, socket, head),
      );
    }
  }

  protected applyLimits(limits: Limits): void {
    this.server.maxConnections = limits.maxConnections;
    if (this.server instanceof https.Server) this.server.headersTimeout = limits.requestHeadTimeoutMs;
  }

  /** HTTP requests waiting on the target, by identity (entries go when they reach 0). */
  private readonly inflight = new Map<string, number>();

  private refused(
    reason: 'head_timeout' | 'body_timeout' | 'backend_timeout' | 'backend_aborted' | 'identity_busy',
  ): void {
    this.ctx.metrics.httpRefused.inc({ listener: this.name, reason });
  }

  /** A request Node could not read: its head came too late (408, counted) or did not parse (400). */
  private clientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      this.refused('head_timeout');
      this.log.info(
        {
          event: 'request-timeout',
          remote: `${socket.remoteAddress}:${socket.remotePort}`,
          reason: `no complete request head within ${this.config.limits.requestHeadTimeoutMs} ms`,
        },
        'request head timed out (408)',
      );
    }
    answerClientError(err, socket);
  }

  override destroyAll(): void {
    super.destroyAll();
    this.agent.destroy();
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
    if (this.config.protocol === 'http') {
      // Decided per request (routes); a connection without a verified identity never gets that far.
      if (!id) return this.deny(s, undefined, 'no verified client certificate');
      this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'ok', reason: 'none' });
      s.once('close', () => {
        this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'up' }, s.bytesRead);
        this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'down' }, s.bytesWritten);
      });
      return;
    }
    const decision = this.policy.decide(id);
    if (!decision.allowed || !id) return this.deny(s, id, decision.reason);
    this.reportAllowed(id);
    this.pipeTcp(s, id, decision);
  }

  /**
   * What OpenSSL's verdict may have missed: the connection's context is the one current at its accept, so a
   * trust bundle or CRL reload during its handshake leaves it verified against the old ones (issue 18.1). Then its
   * chain is verified again against the current bundle (a resumed session has no chain: it reconnects); every
   * admission also looks at the CRLs in force.
   */
  private admissionFailure(s: tls.TLSSocket, raw: Stamped | undefined, id: PeerIdentity): MtlsError | undefined {
    if (raw?.[TRUST] === undefined || raw[TRUST] === this.trustGeneration)
      return this.revocationFailure([id.certificate]);
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
      const header = this.proxyHeader({
        source: { address: s.remoteAddress ?? '0.0.0.0', port: s.remotePort ?? 0 },
        destination: { address: s.localAddress ?? '0.0.0.0', port: s.localPort ?? 0 },
        identity: id,
        certInConnection: !resumed,
        tlsVersion: s.getProtocol() ?? undefined,
        cipher: s.getCipher().standardName,
        ...(s.alpnProtocol ? { alpn: s.alpnProtocol } : {}),
        ...((s as unknown as { servername?: string }).servername
          ? { sni: (s as unknown as { servername: string }).servername }
          : {}),
      });
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

  private headersFor(req: http.IncomingMessage, id: PeerIdentity): http.OutgoingHttpHeaders {
    return forwardedHeaders(req, id, {
      ...(this.by ? { by: this.by } : {}),
      xfccCertificate: this.config.xfccCertificate,
      clientCertHeader: this.config.clientCertHeader,
    });
  }

  /** Forwards one authorized request; the path sent is the normalized one the policy decided on. */
  private forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    const m = this.authorize(req);
    const id = m.identity;
    const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (m.revoked) res.shouldKeepAlive = false; // and the connection ends with the answer
    if (!m.decision.allowed || !id) return this.refuse(req, m, remote, (m2) => sendForbidden(res, m2));
    const who_ = who(id);
    const limits = this.config.limits;
    const busy = this.inflight.get(who_) ?? 0;
    if (busy >= limits.maxRequestsPerIdentity) {
      this.refused('identity_busy');
      this.log.warn(
        { event: 'identity-busy', remote, identity: who_, inflight: busy },
        `${busy} requests of this identity are waiting on the target (maxRequestsPerIdentity); 503`,
      );
      return answer(
        res,
        503,
        'service unavailable',
        `${busy} requests of ${who_} are already waiting on the target; retry later`,
        true,
      );
    }
    this.inflight.set(who_, busy + 1);
    this.ctx.metrics.perIdentity.inc({ listener: this.name, identity: this.ctx.metrics.identityLabel(who_) });
    const t0 = Date.now();
    let settled = false; // answered by a deadline: the target's late answer or error is dropped
    let bodyTimer: NodeJS.Timeout | undefined;
    let backendTimer: NodeJS.Timeout | undefined;
    const up = http.request(this.backendRequest(req, m.target!, this.headersFor(req, id), this.agent), (ur) => {
      clearTimeout(backendTimer);
      if (settled) return void ur.destroy();
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, responseHeaders(ur).flat());
      ur.pipe(res);
      ur.on('end', () => {
        this.log.info(
          {
            event: 'request',
            remote,
            identity: who_,
            method: req.method,
            path: m.target,
            status: ur.statusCode,
            decision: m.decision.auditOnly ? 'audit' : 'allow',
            reason: m.decision.reason,
            durationMs: Date.now() - t0,
          },
          'request forwarded',
        );
      });
      // The target closed in the middle of its body: the client must see an incomplete answer at once, not wait.
      ur.on('close', () => {
        if (ur.complete) return;
        this.refused('backend_aborted');
        this.log.warn(
          { event: 'target-aborted', remote, identity: who_, path: m.target, status: ur.statusCode },
          'the target closed before the end of its answer; the client connection is cut',
        );
        res.destroy();
      });
    });
    const cut = (reason: 'body_timeout' | 'backend_timeout', status: number, text: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(bodyTimer);
      clearTimeout(backendTimer);
      this.refused(reason);
      this.log.warn(
        {
          event: reason === 'body_timeout' ? 'body-timeout' : 'backend-timeout',
          remote,
          identity: who_,
          path: m.target,
        },
        text,
      );
      up.destroy();
      if (res.writableFinished)
        req.socket.destroy(); // answered already, but the body never came: drop the connection
      else if (res.headersSent) res.destroy();
      else answer(res, status, status === 408 ? 'request timeout' : 'gateway timeout', text, true);
    };
    // The body: no byte for bodyIdleTimeout cuts the request (a slow body would hold a target connection for ever).
    // Progress is read off the byte count at each check (as relay.ts does), not by re-arming a timer per chunk: a
    // large upload must not pay a timer per read. A cut comes at most a quarter of the limit late, never early.
    let bodyBytes = 0;
    let seenBytes = 0;
    let lastProgress = Date.now();
    const checkBody = () => {
      if (req.complete) return;
      const now = Date.now();
      if (bodyBytes !== seenBytes) {
        seenBytes = bodyBytes;
        lastProgress = now;
      } else if (now - lastProgress >= limits.bodyIdleTimeoutMs) {
        return cut('body_timeout', 408, `the request body sent nothing for ${limits.bodyIdleTimeoutMs} ms`);
      }
      bodyTimer = setTimeout(checkBody, Math.max(10, limits.bodyIdleTimeoutMs / 4));
    };
    req.on('data', (chunk: Buffer) => {
      bodyBytes += chunk.length;
    });
    req.once('end', () => clearTimeout(bodyTimer));
    req.once('close', () => clearTimeout(bodyTimer));
    checkBody();
    // The target: once the request is sent, its answer must start within backendTimeout.
    up.once('finish', () => {
      if (!settled)
        backendTimer = setTimeout(
          () => cut('backend_timeout', 504, `the target did not answer within ${limits.backendTimeoutMs} ms`),
          limits.backendTimeoutMs,
        );
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (settled) return;
      clearTimeout(backendTimer);
      this.log.error(
        { event: 'target-unreachable', remote, target: this.config.target, code: err.code },
        `target error (${err.code})`,
      );
      if (!res.headersSent) answer(res, 502, 'bad gateway', `the target did not answer (${err.code ?? err.message})`);
      else res.destroy();
    });
    res.once('close', () => {
      clearTimeout(backendTimer);
      const n = (this.inflight.get(who_) ?? 1) - 1;
      if (n > 0) this.inflight.set(who_, n);
      else this.inflight.delete(who_);
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }

  /**
   * The route policy for one request, after the CRLs in force now: a keep-alive connection admitted before its
   * certificate was revoked gets no further request through.
   */
  private authorize(req: http.IncomingMessage): RequestMtls & { revoked?: boolean } {
    const m = authorizeRequest(this.policy, req, this.pathOptions);
    const revoked = m.identity && this.revocationFailure([m.identity.certificate]);
    if (!revoked) return m;
    req.mtls = { ...m, decision: { allowed: false, reason: revoked.message } };
    return { ...req.mtls, revoked: true };
  }

  /** How a request reaches the target: its address, the normalized path, our headers. */
  private backendRequest(
    req: http.IncomingMessage,
    target: string,
    headers: http.OutgoingHttpHeaders,
    agent: http.Agent | false,
  ): http.RequestOptions {
    const t = this.config.target;
    return {
      agent,
      ...('path' in t ? { socketPath: t.path } : { host: t.host, port: t.port }),
      method: req.method,
      path: target,
      headers,
    };
  }

  /** A denied request (403) or one whose target cannot be normalized (400): logged and counted, never forwarded. */
  private refuse(req: http.IncomingMessage, m: RequestMtls, remote: string, answer: (m: RequestMtls) => void): void {
    this.ctx.metrics.handshakes.inc({
      listener: this.name,
      result: 'denied',
      reason: m.badTarget ? 'BAD_REQUEST_TARGET' : 'PEER_NOT_ALLOWED',
    });
    this.log.info(
      {
        event: 'denied',
        remote,
        identity: m.identity ? who(m.identity) : null,
        method: req.method,
        path: req.url,
        decision: 'deny',
        reason: m.decision.reason,
      },
      m.badTarget ? 'bad request target' : 'request denied',
    );
    answer(m);
  }

  /**
   * WebSocket and other upgrades (RFC 9110 7.8): authorized like any request and sent to the target with the
   * identity headers. Only a real `101 Switching Protocols` from the target turns the connection into a byte relay;
   * any other answer is passed on and the connection closed, so nothing the client sent after the upgrade request
   * reaches the target unparsed (a request smuggled behind a refused upgrade would skip the route policy and carry
   * its own XFCC). Node's HTTP parser cannot resume on a socket it has handed over, hence the close.
   */
  private upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    socket.on('error', () => socket.destroy());
    const m = this.authorize(req);
    const remote = `${socket.remoteAddress}:${socket.remotePort}`;
    const rawAnswer = (status: string, reason: string): void =>
      void socket.end(
        `HTTP/1.1 ${status}\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n${JSON.stringify({ error: status.slice(4).toLowerCase(), reason })}`,
      );
    if (!m.decision.allowed || !m.identity)
      return this.refuse(req, m, remote, (m2) =>
        rawAnswer(m2.badTarget ? '400 Bad Request' : '403 Forbidden', m2.decision.reason),
      );
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    if (te !== undefined || (cl !== undefined && cl !== '0'))
      return rawAnswer(
        '400 Bad Request',
        'an upgrade request with a body is not supported; send the upgrade without one',
      );
    const id = m.identity;
    const headers = this.headersFor(req, id);
    headers['connection'] = 'Upgrade';
    headers['upgrade'] = req.headers.upgrade ?? '';
    socket.pause(); // what the client sends before the 101 waits here: it belongs to the new protocol, if any
    const up = http.request(this.backendRequest(req, m.target!, headers, false));
    let settled = false;
    up.on('upgrade', (ur: http.IncomingMessage, target: net.Socket, targetHead: Buffer) => {
      settled = true;
      const lines = [`HTTP/1.1 101 ${ur.statusMessage || 'Switching Protocols'}`];
      for (let i = 0; i < ur.rawHeaders.length; i += 2) lines.push(`${ur.rawHeaders[i]}: ${ur.rawHeaders[i + 1]}`);
      socket.write(lines.join('\r\n') + '\r\n\r\n');
      if (targetHead.length) socket.write(targetHead);
      if (head.length) target.write(head);
      socket.allowHalfOpen = true; // as in TCP mode: the client's half-close ends only the target's write side
      const t0 = Date.now();
      relay(socket, target, this.config.limits, (stats, why) => {
        this.log.info(
          {
            event: 'upgrade',
            remote,
            identity: who(id),
            path: m.target,
            protocol: req.headers.upgrade,
            bytesUp: stats.up,
            bytesDown: stats.down,
            durationMs: Date.now() - t0,
            closed: why,
          },
          'upgraded connection closed',
        );
      });
      socket.resume();
    });
    up.on('response', (ur: http.IncomingMessage) => {
      settled = true;
      // Refused (or ignored) by the target: its answer goes back, then the connection ends. No raw relay.
      const lines = [`HTTP/1.1 ${ur.statusCode} ${ur.statusMessage ?? ''}`];
      for (const [k, v] of responseHeaders(ur)) lines.push(`${k}: ${v}`);
      lines.push('connection: close');
      socket.write(lines.join('\r\n') + '\r\n\r\n');
      this.log.info(
        { event: 'upgrade-refused', remote, identity: who(id), path: m.target, status: ur.statusCode },
        `the target answered the upgrade with ${ur.statusCode}; connection closed`,
      );
      ur.pipe(socket);
      ur.on('error', () => socket.destroy());
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      this.log.error(
        { event: 'target-unreachable', remote, target: this.config.target, code: err.code },
        `target error (${err.code})`,
      );
      if (!settled) rawAnswer('502 Bad Gateway', `the target did not answer (${err.code ?? err.message})`);
      else socket.destroy();
    });
    socket.once('close', () => {
      if (!settled) up.destroy();
    });
    up.end();
  }
}
