import http from 'node:http';
import net from 'node:net';
import { answerClientError, authorizeRequest, sendForbidden, type RequestMtls } from '../http/authorize.js';
import type { PathOptions } from '../identity/request-target.js';
import type { PeerIdentity } from '../identity/identity.js';
import { describePeer as who } from '../identity/policy.js';
import { MtlsError } from '../errors.js';
import type { ServerListenerConfig } from './config.js';
import { relay } from './relay.js';
import { answer, forwardedHeaders, responseHeaders } from './forwarded-headers.js';
import type { Logger } from 'pino';
import type { Policy } from '../identity/policy.js';
import type { Certificate } from '../pki/certificate.js';
import type { ProxyMetrics } from './metrics.js';

/** What the HTTP forwarder needs from its listener (read live: a reload replaces the config and the policy). */
export interface ForwarderHost {
  readonly name: string;
  readonly config: ServerListenerConfig;
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  policy(): Policy;
  revocationFailure(chain: readonly Certificate[]): MtlsError | undefined;
  /** The admission still being decided for this connection (the client's OCSP answer), if any: true to go on. */
  admission(socket: net.Socket): Promise<boolean> | undefined;
}

/**
 * HTTP mode of `mtls proxy server`: each request authorized on its normalized target, forwarded with the identity
 * headers (and nothing the client claimed in them), with the head, body and backend deadlines and a cap on the
 * requests of one identity waiting on the target; upgrades relayed only after a real 101.
 */
export class HttpForwarder {
  private readonly agent = new http.Agent({ keepAlive: true, maxSockets: 512 });

  constructor(
    private readonly host: ForwarderHost,
    private readonly by: string | undefined,
  ) {}

  destroy(): void {
    this.agent.destroy();
  }

  private get pathOptions(): PathOptions {
    return { mergeSlashes: this.host.config.mergeSlashes };
  }
  /** HTTP requests waiting on the target, by identity (entries go when they reach 0). */
  private readonly inflight = new Map<string, number>();

  private refused(
    reason: 'head_timeout' | 'body_timeout' | 'backend_timeout' | 'backend_aborted' | 'identity_busy',
  ): void {
    this.host.metrics.httpRefused.inc({ listener: this.host.name, reason });
  }

  /** A request Node could not read: its head came too late (408, counted) or did not parse (400). */
  clientError(err: NodeJS.ErrnoException, socket: net.Socket): void {
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      this.refused('head_timeout');
      this.host.log.info(
        {
          event: 'request-timeout',
          remote: `${socket.remoteAddress}:${socket.remotePort}`,
          reason: `no complete request head within ${this.host.config.limits.requestHeadTimeoutMs} ms`,
        },
        'request head timed out (408)',
      );
    }
    answerClientError(err, socket);
  }

  private headersFor(req: http.IncomingMessage, id: PeerIdentity): http.OutgoingHttpHeaders {
    return forwardedHeaders(req, id, {
      ...(this.by ? { by: this.by } : {}),
      xfccCertificate: this.host.config.xfccCertificate,
      clientCertHeader: this.host.config.clientCertHeader,
    });
  }

  /** Forwards one authorized request; the path sent is the normalized one the policy decided on. */
  forward(req: http.IncomingMessage, res: http.ServerResponse): void {
    const pending = this.host.admission(req.socket);
    if (pending) {
      // Not a byte of it goes to the target before the connection is admitted; a refused one is closed.
      req.pause();
      void pending.then((ok) => (ok ? this.forward(req, res) : res.destroy()));
      return;
    }
    const m = this.authorize(req);
    const id = m.identity;
    const remote = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
    if (m.revoked) res.shouldKeepAlive = false; // and the connection ends with the answer
    if (!m.decision.allowed || !id) return this.refuse(req, m, remote, (m2) => sendForbidden(res, m2));
    const who_ = who(id);
    const limits = this.host.config.limits;
    const busy = this.inflight.get(who_) ?? 0;
    if (busy >= limits.maxRequestsPerIdentity) {
      this.refused('identity_busy');
      this.host.log.warn(
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
    this.host.metrics.perIdentity.inc({ listener: this.host.name, identity: this.host.metrics.identityLabel(who_) });
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
        this.host.log.info(
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
        this.host.log.warn(
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
      this.host.log.warn(
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
      this.host.log.error(
        { event: 'target-unreachable', remote, target: this.host.config.target, code: err.code },
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
    const m = authorizeRequest(this.host.policy(), req, this.pathOptions);
    const revoked = m.identity && this.host.revocationFailure([m.identity.certificate]);
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
    const t = this.host.config.target;
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
    this.host.metrics.handshakes.inc({
      listener: this.host.name,
      result: 'denied',
      reason: m.badTarget ? 'BAD_REQUEST_TARGET' : 'PEER_NOT_ALLOWED',
    });
    this.host.log.info(
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
  upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const pending = this.host.admission(socket);
    if (pending) {
      // What the client sends meanwhile stays buffered in the socket (nobody reads it before upgrade() goes on).
      void pending.then((ok) => (ok ? this.upgrade(req, socket, head) : socket.destroy()));
      return;
    }
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
      relay(socket, target, this.host.config.limits, (stats, why) => {
        this.host.log.info(
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
      this.host.log.info(
        { event: 'upgrade-refused', remote, identity: who(id), path: m.target, status: ur.statusCode },
        `the target answered the upgrade with ${ur.statusCode}; connection closed`,
      );
      ur.pipe(socket);
      ur.on('error', () => socket.destroy());
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      this.host.log.error(
        { event: 'target-unreachable', remote, target: this.host.config.target, code: err.code },
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
