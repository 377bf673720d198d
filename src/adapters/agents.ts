import https from 'node:https';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { Agent as UndiciAgent, buildConnector, Dispatcher } from 'undici';
import { MtlsError } from '../errors.js';
import { rememberSessions, serverIdentityOf } from '../tls/session-identity.js';
import type { Credentials } from '../tls/credentials.js';
import { CredentialHolder, currentCredentials } from '../tls/reload.js';
import { clientTlsOptions, checkServerIdentity, type ServerExpectation } from '../tls/options.js';
import { checkStaple, collectStaple, type StapleMode } from '../tls/stapling.js';
import { isIpLiteral } from '../pki/names.js';

export interface ClientAgentOptions {
  /**
   * Our certificate: fixed, or a CredentialHolder (CredentialReloader, RenewingCredentials): after each change, new
   * connections present the new certificate (connections already open keep theirs).
   */
  credentials?: Credentials | CredentialHolder;
  /** PEM trust bundle. */
  ca: string;
  /** Expected server identity (SPIFFE ID pattern, or a name other than the URL's host). */
  expect?: ServerExpectation;
  /** Ask for the server's stapled OCSP status and check it ('require': refuse a server without one). */
  staple?: StapleMode;
}

/** The identity check, then the staple check, of a connected socket; the first refusal, or undefined. */
function serverError(
  socket: tls.TLSSocket,
  host: string,
  o: ClientAgentOptions,
  staple: () => Buffer | undefined,
): Error | undefined {
  return (
    identityError(socket, host, o.expect ?? {}) ??
    (o.staple ? checkStaple(socket, staple(), o.staple).error : undefined)
  );
}

/** Checks the server identity on a connected socket, resumed or not, and remembers it for its sessions. */
function identityError(socket: tls.TLSSocket, host: string, expect: ServerExpectation): Error | undefined {
  const id = serverIdentityOf(socket);
  if (!id)
    return new MtlsError(
      'SERVER_IDENTITY_MISMATCH',
      'the server identity is unknown (no certificate, or a resumed session never verified here)',
    );
  rememberSessions(socket, id);
  return checkServerIdentity(id, host, expect);
}

/** Takes the listener of an agent that was collected without destroy() off its CredentialHolder. */
const followers = new FinalizationRegistry<() => void>((unfollow) => unfollow());

/** An https.Agent that presents our certificate and checks the server's identity from DER, resumed or not. */
export class MtlsHttpsAgent extends https.Agent {
  private readonly o: ClientAgentOptions;

  constructor(o: ClientAgentOptions & { keepAlive?: boolean }) {
    super({
      keepAlive: o.keepAlive ?? true,
      ...clientTlsOptions(currentCredentials(o.credentials), o.ca, o.expect ?? {}),
      ...(o.staple ? { requestOCSP: true } : {}),
    });
    this.o = o;
    const holder = o.credentials;
    if (holder instanceof CredentialHolder) {
      // The holder outlives agents (one RenewingCredentials, agents made and dropped): its listener holds the agent
      // only weakly, and goes when the agent is destroyed or collected, so agents do not pile up on it.
      const ref = new WeakRef(this);
      const onReload = () => {
        const agent = ref.deref();
        if (agent) agent.follow(holder);
        else holder.off('reloaded', onReload);
      };
      holder.on('reloaded', onReload);
      this.unfollow = () => holder.off('reloaded', onReload);
      followers.register(this, this.unfollow, this);
    }
  }

  private unfollow?: () => void;

  /**
   * The certificate and key are part of the agent's connection name: new requests open new connections, with a
   * session cache of their own (a session of the old certificate is not resumed); idle connections are closed.
   */
  private follow(holder: CredentialHolder): void {
    Object.assign(this.options, { cert: holder.current.cert, key: holder.current.key });
    for (const idle of Object.values(this.freeSockets)) for (const socket of idle ?? []) socket.destroy();
  }

  override destroy(): void {
    this.unfollow?.();
    followers.unregister(this);
    super.destroy();
  }

  override createConnection(options: tls.ConnectionOptions, cb?: (err: Error | null, s: Duplex) => void): Duplex {
    const create = (
      https.Agent.prototype as unknown as {
        createConnection: (o: tls.ConnectionOptions, cb?: unknown) => tls.TLSSocket;
      }
    ).createConnection;
    const socket = create.call(this, options, cb);
    const staple = this.o.staple ? collectStaple(socket) : () => undefined;
    socket.once('secureConnect', () => {
      const err = serverError(socket, String(options.host ?? options.servername ?? ''), this.o, staple);
      if (err) socket.destroy(err);
    });
    return socket;
  }
}

/**
 * An undici Agent (undici 6, Node 20's fetch stack) for mTLS: `fetch(url, { dispatcher: mtlsUndiciAgent(o) })`.
 * Presents our certificate, verifies the server, and checks its identity on every connection, resumed or not.
 * With a CredentialHolder, a dispatcher that follows it: after each change, requests go through a new Agent (new
 * connections, new certificate, no session of the old one) and the old Agent closes once its requests are done.
 */
export function mtlsUndiciAgent(o: ClientAgentOptions & { credentials?: Credentials }): UndiciAgent;
export function mtlsUndiciAgent(o: ClientAgentOptions): Dispatcher;
export function mtlsUndiciAgent(o: ClientAgentOptions): Dispatcher {
  const holder = o.credentials;
  if (holder instanceof CredentialHolder) return new FollowingDispatcher(holder, (c) => undiciAgentFor(c, o));
  return undiciAgentFor(holder, o);
}

function undiciAgentFor(credentials: Credentials | undefined, o: ClientAgentOptions): UndiciAgent {
  const base = clientTlsOptions(credentials, o.ca, o.expect ?? {});
  if (o.staple) return new UndiciAgent({ connect: stapleConnector(base, o) });
  const connector = buildConnector(base as buildConnector.BuildOptions);
  return new UndiciAgent({
    connect: (opts, callback) => {
      connector(opts, (err, socket) => {
        if (err || !socket) return callback(err ?? new Error('no socket'), null);
        const mismatch = identityError(socket as tls.TLSSocket, opts.hostname, o.expect ?? {});
        if (mismatch) {
          socket.destroy();
          return callback(mismatch, null);
        }
        callback(null, socket);
      });
    },
  });
}

/** Dispatches through an Agent made for the holder's current credentials, made anew when they change. */
class FollowingDispatcher extends Dispatcher {
  private madeFor: Credentials;
  private agent: UndiciAgent;

  constructor(
    private readonly holder: CredentialHolder,
    private readonly make: (c: Credentials) => UndiciAgent,
  ) {
    super();
    this.madeFor = holder.current;
    this.agent = make(this.madeFor);
  }

  private current(): UndiciAgent {
    if (this.holder.current !== this.madeFor) {
      const old = this.agent;
      this.madeFor = this.holder.current;
      this.agent = this.make(this.madeFor);
      old.close().catch(() => undefined); // after its requests in flight; its idle connections go now
    }
    return this.agent;
  }

  override dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandlers): boolean {
    return this.current().dispatch(options, handler);
  }

  override close(): Promise<void>;
  override close(callback: () => void): void;
  override close(callback?: () => void): Promise<void> | void {
    const done = this.agent.close();
    if (!callback) return done;
    done.then(callback, callback);
  }

  override destroy(): Promise<void>;
  override destroy(err: Error | null): Promise<void>;
  override destroy(callback: () => void): void;
  override destroy(err: Error | null, callback: () => void): void;
  override destroy(a?: Error | null | (() => void), b?: () => void): Promise<void> | void {
    const err = typeof a === 'function' ? null : (a ?? null);
    const callback = typeof a === 'function' ? a : b;
    const done = this.agent.destroy(err);
    if (!callback) return done;
    done.then(callback, callback);
  }
}

/**
 * undici's own connector calls back after 'secureConnect', too late to hear the staple ('OCSPResponse' comes
 * first): with stapling, connections are made here (10 s deadline, SNI as undici sends it).
 */
function stapleConnector(base: tls.ConnectionOptions, o: ClientAgentOptions): buildConnector.connector {
  return (opts, callback) => {
    const servername = opts.servername ?? (isIpLiteral(opts.hostname) ? undefined : opts.hostname);
    const options = {
      ...base,
      requestOCSP: true,
      host: opts.hostname,
      port: Number(opts.port) || 443,
      ...(servername ? { servername } : {}),
    };
    const socket = tls.connect(options);
    const staple = collectStaple(socket);
    let done = false;
    const finish = (err: Error | null) => {
      if (done) return;
      done = true;
      clearTimeout(deadline);
      if (err) {
        socket.destroy();
        return callback(err, null);
      }
      callback(null, socket);
    };
    const deadline = setTimeout(
      () => finish(new MtlsError('HANDSHAKE_TIMEOUT', 'no TLS handshake within 10 s')),
      10_000,
    );
    socket.once('error', finish);
    socket.once('secureConnect', () => {
      socket.off('error', finish);
      finish(serverError(socket, opts.hostname, o, staple) ?? null);
    });
  };
}
