import fs from 'node:fs';
import net from 'node:net';
import type { Logger } from 'pino';
import { CredentialReloader } from '../tls/reload.js';
import { readPassphraseFile } from '../util/fs.js';
import { listenOn } from '../util/listen.js';
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

  constructor(public config: C, protected readonly ctx: ListenerContext) {
    const passphrase = config.keyPassphraseFile ? readPassphraseFile(config.keyPassphraseFile) : undefined;
    const crl = 'crl' in config && config.crl ? [config.crl] : [];
    this.reloader = new CredentialReloader({ certFile: config.cert, keyFile: config.key, caFile: config.ca, extraFiles: crl, ...(passphrase !== undefined ? { passphrase } : {}) }, 100, ctx.ticketKeys);
    this.log = ctx.log.child({ listener: config.name });
    this.reloader.on('reloaded', (e) => {
      ctx.metrics.reloads.inc({ listener: config.name, result: 'ok' });
      this.exposeExpiry();
      this.log.info({ event: 'reloaded', fingerprint256: e.fingerprint256, trustChanged: e.trustChanged }, e.trustChanged ? 'new certificate and trust bundle (session tickets replaced)' : 'new certificate');
    });
    this.reloader.on('reload-error', (err: Error) => {
      ctx.metrics.reloads.inc({ listener: config.name, result: 'error' });
      this.log.error({ event: 'reload-failed', reason: err.message }, err.message);
    });
  }

  /** Who does TLS and the relay: 'node' (Node's TLS socket) or 'native' (native/relay.cc). */
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
    this.log.warn({ event: 'dropped', remote, reason: `maxConnections ${this.config.limits.maxConnections} reached` }, 'connection refused: too many connections');
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
    if ('path' in a) removeStaleSocket(a.path);
    await listenOn(this.server, a, `listener '${this.name}'`);
    this.reloader.start();
    this.exposeExpiry();
    this.log.info({ event: 'listening', address: formatAddress(this.address()), mode: this.config.mode, engine: this.engine }, `listening on ${formatAddress(this.address())}`);
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

function removeStaleSocket(p: string): void {
  try {
    if (fs.statSync(p).isSocket()) fs.unlinkSync(p);
  } catch {
    // nothing there
  }
}
