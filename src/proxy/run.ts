import cluster, { type Worker } from 'node:cluster';
import crypto from 'node:crypto';
import http from 'node:http';
import os from 'node:os';
import client from 'prom-client';
import { MtlsError, messageOf } from '../errors.js';
import type { ProxyConfig } from './config.js';
import { listenOn } from '../io/listen.js';
import { createAdminServer } from './admin.js';
import { createLogger } from './log.js';
import { ProxyMetrics } from './metrics.js';
import { MtlsProxy, type Readiness } from './runtime.js';
import { fetchListenerCrls } from './crl-urls.js';

type Message =
  | { type: 'want-secret' }
  | { type: 'ticket-secret'; secret: string }
  | { type: 'ready' }
  | { type: 'failed'; reason: string }
  | { type: 'reload' }
  | { type: 'drain' };

const listenAdmin = (server: http.Server, config: ProxyConfig) => listenOn(server, config.admin!, 'the admin port');

/**
 * Runs the proxy until SIGTERM/SIGINT (graceful drain, exit 0). With `workers` other than 1, a cluster: the
 * primary forks the workers (the OS spreads connections), hands each the same ticket secret so sessions resume
 * on any worker, serves the admin port with the workers' metrics summed, forwards SIGHUP as a reload, and
 * restarts a worker that dies.
 */
export async function runProxy(config: ProxyConfig, configFile?: string): Promise<void> {
  const workers = config.workers === 0 ? os.availableParallelism() : config.workers;
  if (workers > 1 && cluster.isPrimary) return runPrimary(config, workers);
  if (cluster.isWorker) return runWorker(config, configFile);
  const log = createLogger(config.logLevel);
  const crls = await fetchListenerCrls(config, log);
  process.once('exit', crls.close);
  const proxy = new MtlsProxy({ config: crls.config, log, ...(configFile ? { configFile } : {}) });
  await proxy.start();
  const admin = config.admin
    ? createAdminServer({
        metrics: async () => ({
          contentType: proxy.metrics.registry.contentType,
          body: await proxy.metrics.registry.metrics(),
        }),
        readiness: () => proxy.readiness(),
      })
    : undefined;
  if (admin) await listenAdmin(admin, config);
  process.on('SIGHUP', () => void proxy.reload());
  await untilSignal();
  await proxy.drain();
  admin?.close();
  proxy.log.flush();
}

function untilSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
}

async function runWorker(config: ProxyConfig, configFile?: string): Promise<void> {
  const secret = await new Promise<Buffer>((resolve) => {
    const on = (m: Message) => {
      if (m.type === 'ticket-secret') {
        process.off('message', on);
        resolve(Buffer.from(m.secret, 'hex'));
      }
    };
    process.on('message', on);
    // Ask only now: a message sent before this listener existed would be lost.
    process.send!({ type: 'want-secret' } satisfies Message);
  });
  const metrics = new ProxyMetrics();
  new client.AggregatorRegistry(); // installs the worker's side of metrics aggregation
  client.AggregatorRegistry.setRegistries([metrics.registry]);
  let proxy: MtlsProxy;
  try {
    // Each worker fetches the CRLs it enforces (crlUrl) into a file of its own.
    const log = createLogger(config.logLevel);
    const crls = await fetchListenerCrls(config, log);
    process.once('exit', crls.close);
    proxy = new MtlsProxy({
      config: crls.config,
      log,
      metrics,
      ticketSecret: secret,
      ...(configFile ? { configFile } : {}),
    });
    await proxy.start();
  } catch (err) {
    // The primary stops the cluster and says why: a worker that cannot start must not be restarted forever.
    process.send!({ type: 'failed', reason: messageOf(err) } satisfies Message, () => process.exit(1));
    return;
  }
  process.send!({ type: 'ready' } satisfies Message);
  const done = new Promise<void>((resolve) => {
    process.on('message', (m: Message) => {
      if (m.type === 'reload') void proxy.reload();
      if (m.type === 'drain') resolve();
    });
    process.once('SIGTERM', () => resolve());
    process.once('SIGINT', () => resolve());
  });
  await done;
  await proxy.drain();
  proxy.log.flush();
  process.disconnect();
}

async function runPrimary(config: ProxyConfig, count: number): Promise<void> {
  const log = createLogger(config.logLevel).child({ role: 'primary' });
  const secret = crypto.randomBytes(32).toString('hex');
  const aggregator = new client.AggregatorRegistry();
  const ready = new Set<number>();
  let draining = false;
  let started = false;
  let failStartup: (err: Error) => void = () => undefined;
  const startupFailed = new Promise<never>((_, reject) => {
    failStartup = reject;
  });
  const fork = (): Worker => {
    const w = cluster.fork();
    w.on('message', (m: Message) => {
      if (m.type === 'want-secret') w.send({ type: 'ticket-secret', secret } satisfies Message);
      if (m.type === 'ready') {
        ready.add(w.id);
        if (ready.size === count) started = true;
      }
      if (m.type === 'failed') failStartup(new MtlsError('IO', m.reason));
    });
    w.on('exit', (code, signal) => {
      ready.delete(w.id);
      if (draining) return;
      // Before the cluster ever ran, a dying worker is a failed start: restarting it would only fail again.
      if (!started)
        return failStartup(new MtlsError('IO', `a proxy worker exited while starting (${signal ?? `code ${code}`})`));
      log.error({ event: 'worker-died', worker: w.id, code, signal }, 'worker died; starting another');
      fork();
    });
    return w;
  };
  const stopWorkers = () => {
    draining = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGKILL');
  };
  startupFailed.catch(stopWorkers);
  for (let i = 0; i < count; i++) fork();
  const readiness = (): Readiness =>
    draining
      ? { ready: false, reason: 'draining' }
      : ready.size === count
        ? { ready: true, reason: `${count} workers ready` }
        : { ready: false, reason: `${ready.size} of ${count} workers ready` };
  const admin = config.admin
    ? createAdminServer({
        metrics: async () => ({ contentType: aggregator.contentType, body: await aggregator.clusterMetrics() }),
        readiness,
      })
    : undefined;
  if (admin) await listenAdmin(admin, config);
  log.info({ event: 'cluster', workers: count }, `cluster of ${count} workers sharing session ticket keys`);
  process.on('SIGHUP', () => {
    for (const w of Object.values(cluster.workers ?? {})) w?.send({ type: 'reload' } satisfies Message);
  });
  try {
    await Promise.race([untilSignal(), startupFailed]);
  } catch (err) {
    admin?.close();
    throw err;
  }
  draining = true;
  const live = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w);
  await Promise.all(
    live.map(
      (w) =>
        new Promise<void>((resolve) => {
          w.once('exit', () => resolve());
          w.send({ type: 'drain' } satisfies Message);
        }),
    ),
  );
  admin?.close();
  log.info({ event: 'stopped' }, 'all workers drained');
  log.flush();
}
