import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import type { Logger } from 'pino';
import { messageOf, MtlsError } from '../errors.js';
import { ClientListener } from './client-listener.js';
import { type ProxyConfig, type ServerListenerConfig } from './config.js';
import { readProxyConfig } from './config-file.js';
import type { Listener } from './listener.js';
import { createLogger } from './log.js';
import { ProxyMetrics } from './metrics.js';
import { NativeServerListener } from './native-listener.js';
import { nativeUnavailable } from './native.js';
import { ServerListener } from './server-listener.js';
import { ticketKeysFor } from './tickets.js';

export interface ProxyOptions {
  config: ProxyConfig;
  /** The YAML file the config came from: re-read on reload (policy, limits) and watched. */
  configFile?: string;
  log?: Logger;
  metrics?: ProxyMetrics;
  /** Secret the session ticket keys derive from; the same in every worker of a cluster. Random by default. */
  ticketSecret?: Buffer;
}

/** TCP listeners run on the native engine unless it is not built ('auto' then says so) or 'node' is asked for. */
function useNative(l: ServerListenerConfig, log: Logger): boolean {
  if (l.protocol !== 'tcp' || l.engine === 'node') return false;
  const why = nativeUnavailable();
  if (why === undefined) return true;
  if (l.engine === 'native') throw new MtlsError('ENGINE_UNAVAILABLE', `listener '${l.name}': ${why}`);
  log.warn(
    { event: 'engine', listener: l.name, engine: 'node', reason: why },
    `listener '${l.name}' runs on Node's TLS socket: ${why}`,
  );
  return false;
}

/** Readiness: every listener listening, its certificate valid now, and not draining. */
export interface Readiness {
  ready: boolean;
  reason: string;
}

/**
 * The proxy in one process: its listeners, reload (certificates, trust, CRLs, policy) on file change and on
 * demand (SIGHUP), and a graceful drain (SIGTERM).
 */
export class MtlsProxy extends EventEmitter {
  readonly endpoints: Listener[];
  readonly log: Logger;
  readonly metrics: ProxyMetrics;
  private config: ProxyConfig;
  private draining = false;
  private started = false;
  private watcher: fs.FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ProxyOptions) {
    super();
    this.config = o.config;
    this.log = o.log ?? createLogger(o.config.logLevel);
    this.metrics = o.metrics ?? new ProxyMetrics();
    // A native-engine listener runs a thread per core this process may use: all of them, or its share of a
    // cluster (workers: 0 is one worker per core).
    const cores = os.availableParallelism();
    const threads = Math.max(1, Math.floor(cores / (o.config.workers === 0 ? cores : o.config.workers)));
    const ctx = {
      log: this.log,
      metrics: this.metrics,
      ticketKeys: ticketKeysFor(o.ticketSecret ?? crypto.randomBytes(32)),
      threads,
    };
    this.endpoints = o.config.listeners.map((l) => {
      if (l.mode === 'client') return new ClientListener(l, ctx);
      return useNative(l, this.log) ? new NativeServerListener(l, ctx) : new ServerListener(l, ctx);
    });
  }

  async start(): Promise<void> {
    try {
      for (const l of this.endpoints) await l.start();
    } catch (err) {
      await Promise.all(this.endpoints.map((l) => l.stopAccepting()));
      throw err;
    }
    if (this.o.configFile) this.watchConfig(this.o.configFile);
    this.started = true;
  }

  private watchConfig(file: string): void {
    const base = path.basename(file);
    this.watcher = fs.watch(path.dirname(path.resolve(file)), (_e, name) => {
      if (name !== null && name !== base && !String(name).startsWith('..')) return;
      clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.reload(), 100);
    });
    this.watcher.on('error', (err) =>
      this.log.error({ event: 'watch-failed', reason: err.message }, `cannot watch ${file}`),
    );
  }

  /**
   * Re-reads everything: the config file (policy, limits; a broken file keeps the old config) and each
   * listener's certificate, key and trust bundle (a broken file keeps the old ones). Live connections go on.
   */
  async reload(): Promise<void> {
    if (this.o.configFile) {
      try {
        const next = readProxyConfig(this.o.configFile);
        for (const l of next.listeners) {
          const live = this.endpoints.find((x) => x.name === l.name);
          if (!live) {
            this.log.warn(
              { event: 'reload-partial', listener: l.name },
              `listener '${l.name}' is new: restart the proxy to start it`,
            );
            continue;
          }
          if (live.config.mode !== l.mode) {
            this.log.warn(
              { event: 'reload-partial', listener: l.name },
              `listener '${l.name}' changed mode: restart the proxy to apply`,
            );
            continue;
          }
          (live as Listener<typeof l>).update(l);
        }
        this.config = next;
      } catch (err) {
        this.metrics.reloads.inc({ listener: '*', result: 'error' });
        this.log.error(
          { event: 'reload-failed', reason: messageOf(err) },
          `kept the previous config: ${messageOf(err)}`,
        );
      }
    }
    await Promise.all(this.endpoints.map((l) => l.reloader.reload()));
    this.emit('reloaded');
  }

  readiness(): Readiness {
    if (!this.started) return { ready: false, reason: 'starting' };
    if (this.draining) return { ready: false, reason: 'draining' };
    const now = Date.now();
    for (const l of this.endpoints) {
      const leaf = l.reloader.current.leaf;
      if (leaf.notAfter.getTime() < now)
        return { ready: false, reason: `listener '${l.name}': certificate expired at ${leaf.notAfter.toISOString()}` };
    }
    return { ready: true, reason: `${this.endpoints.length} listener(s) up` };
  }

  get active(): number {
    return this.endpoints.reduce((n, l) => n + l.active, 0);
  }

  /** Stops accepting, lets live connections finish for up to `timeoutMs`, then closes what is left. */
  async drain(timeoutMs = this.config.drainTimeoutMs): Promise<{ left: number }> {
    this.draining = true;
    this.watcher?.close();
    clearTimeout(this.timer);
    const closing = Promise.all(this.endpoints.map((l) => l.stopAccepting()));
    // Said once the listening sockets are closed: a connection after this line is refused, not raced.
    this.log.info({ event: 'draining', active: this.active, timeoutMs }, 'draining: no new connections');
    await closing;
    const deadline = Date.now() + timeoutMs;
    while (this.active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const left = this.active;
    for (const l of this.endpoints) l.destroyAll();
    this.log.info(
      { event: 'drained', closedByForce: left },
      left ? `drain timeout: closed ${left} connection(s)` : 'drained',
    );
    return { left };
  }
}
