import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { MtlsError } from '../errors.js';
import { CredentialReloader } from '../tls/reload.js';
import { readPassphraseFile } from '../io/files.js';
import { listenOn } from '../io/listen.js';
import { formatAddress, type Address, type ListenerConfig } from './config.js';
import type { ProxyMetrics } from './metrics.js';

export interface ListenerContext {
  log: Logger;
  metrics: ProxyMetrics;
  /** Session ticket keys for a trust digest (shared by cluster workers). */
  ticketKeys?: (trustDigest: Buffer) => Buffer;
  /** Threads of a native-engine listener: the cores this process may use (all, or its share in a cluster). */
  threads?: number;
}

/** What every listener has: a socket server, its live connections, reloadable credentials, a drain. */
export abstract class Listener<C extends ListenerConfig = ListenerConfig> {
  readonly reloader: CredentialReloader;
  protected readonly sockets = new Set<net.Socket>();
  protected readonly log: Logger;
  protected abstract readonly server: net.Server;

  constructor(
    public config: C,
    protected readonly ctx: ListenerContext,
  ) {
    const passphrase = config.keyPassphraseFile ? readPassphraseFile(config.keyPassphraseFile) : undefined;
    const crl = 'crl' in config && config.crl ? [config.crl] : [];
    this.reloader = new CredentialReloader(
      {
        certFile: config.cert,
        keyFile: config.key,
        caFile: config.ca,
        extraFiles: crl,
        ...(passphrase !== undefined ? { passphrase } : {}),
      },
      100,
      ctx.ticketKeys,
    );
    this.log = ctx.log.child({ listener: config.name });
    this.reloader.on('reloaded', (e) => {
      ctx.metrics.reloads.inc({ listener: config.name, result: 'ok' });
      this.exposeExpiry();
      this.log.info(
        { event: 'reloaded', fingerprint256: e.fingerprint256, trustChanged: e.trustChanged },
        e.trustChanged ? 'new certificate and trust bundle (session tickets replaced)' : 'new certificate',
      );
    });
    this.reloader.on('reload-error', (err: Error) => {
      ctx.metrics.reloads.inc({ listener: config.name, result: 'error' });
      this.log.error({ event: 'reload-failed', reason: err.message }, err.message);
    });
  }

  /** Who does TLS and the relay: 'node' (Node's TLS socket) or 'native' (native/). */
  get engine(): 'node' | 'native' {
    return 'node';
  }

  get name(): string {
    return this.config.name;
  }

  get active(): number {
    return this.sockets.size;
  }

  protected exposeExpiry(): void {
    this.ctx.metrics.certExpiry.set({ listener: this.name }, this.reloader.current.leaf.notAfter.getTime() / 1000);
  }

  protected reportDropped(remote: string | undefined): void {
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: 'MAX_CONNECTIONS' });
    this.log.warn(
      { event: 'dropped', remote, reason: `maxConnections ${this.config.limits.maxConnections} reached` },
      'connection refused: too many connections',
    );
  }

  /** Counts and remembers a raw accepted (or opened) socket until it closes. */
  protected track(raw: net.Socket): void {
    this.sockets.add(raw);
    this.ctx.metrics.active.inc({ listener: this.name });
    raw.once('close', () => {
      this.sockets.delete(raw);
      this.ctx.metrics.active.dec({ listener: this.name });
    });
  }

  async start(): Promise<void> {
    this.server.maxConnections = this.config.limits.maxConnections;
    this.server.on('drop', (d?: { remoteAddress?: string }) => this.reportDropped(d?.remoteAddress));
    const a = this.config.listen;
    if ('path' in a) await removeStaleSocket(a.path, `listener '${this.name}'`);
    await listenOn(this.server, a, `listener '${this.name}'`);
    this.reloader.start();
    this.exposeExpiry();
    this.log.info(
      { event: 'listening', address: formatAddress(this.address()), mode: this.config.mode, engine: this.engine },
      `listening on ${formatAddress(this.address())}`,
    );
  }

  /** Where it actually listens (the port chosen when 0 was asked for). */
  address(): Address {
    const a = this.server.address();
    if (typeof a === 'string') return { path: a };
    return a ? { host: a.address, port: a.port } : this.config.listen;
  }

  /** Stops accepting; live connections go on. */
  stopAccepting(): Promise<void> {
    this.reloader.stop();
    return new Promise((resolve) => {
      if (!this.server.listening) return resolve();
      this.server.close(() => resolve());
    });
  }

  destroyAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** Applies a new config of the same listener (policy and limits; addresses and files need a restart). */
  abstract update(next: C): void;
}

/**
 * A unix socket path left by a process that died is removed; one that a live process listens on is refused, as
 * EADDRINUSE would be for a port (unlinking it silently took the path over from another service).
 */
async function removeStaleSocket(p: string, what: string): Promise<void> {
  let isSocket = false;
  try {
    isSocket = fs.statSync(p).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) return; // listen fails with EADDRINUSE and says so
  const live = await new Promise<boolean>((resolve) => {
    const c = net.connect(p);
    const t = setTimeout(() => {
      c.destroy();
      resolve(true);
    }, 1000); // no answer either way: assume it is in use
    c.once('connect', () => {
      clearTimeout(t);
      c.destroy();
      resolve(true);
    });
    c.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(t);
      resolve(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT');
    });
  });
  if (live)
    throw new MtlsError(
      'IO',
      `${what} cannot listen on unix:${p}: another process is listening there (EADDRINUSE); ` +
        `stop it or choose another path`,
    );
  fs.rmSync(p, { force: true });
}
