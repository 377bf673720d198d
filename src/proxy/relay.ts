import net from 'node:net';
import type { Address, Limits } from './config.js';

export interface RelayStats {
  /** Bytes from the accepting side to the other (client -> target). */
  up: number;
  down: number;
}

export function connectOptions(a: Address): net.NetConnectOpts {
  return 'path' in a ? { path: a.path, allowHalfOpen: true } : { host: a.host, port: a.port, allowHalfOpen: true };
}

/**
 * Pipes two connected sockets both ways with backpressure and correct half-close (an 'end' from one side ends
 * the other's write side only; the other direction keeps flowing). Either side failing, idling past the limit
 * or outliving its lifetime destroys both. `done` runs once, when both are closed.
 */
export function relay(a: net.Socket, b: net.Socket, limits: Pick<Limits, 'idleTimeoutMs' | 'maxLifetimeMs'>, done: (stats: RelayStats, why: string) => void): void {
  const stats: RelayStats = { up: 0, down: 0 };
  let why = 'closed';
  let closed = 0;
  const kill = (reason: string) => {
    if (why === 'closed') why = reason;
    a.destroy();
    b.destroy();
  };
  // One 'data' listener per direction that counts and writes (stream.pipe plus a counting listener cost
  // measurably more per 16 KiB record); pause on backpressure, resume on drain; an end ends the other's writes.
  const wire = (from: net.Socket, to: net.Socket, count: (n: number) => void) => {
    from.on('data', (d: Buffer) => {
      count(d.length);
      if (!to.write(d)) from.pause();
    });
    to.on('drain', () => from.resume());
    from.on('end', () => to.end());
  };
  wire(a, b, (n) => { stats.up += n; });
  wire(b, a, (n) => { stats.down += n; });
  for (const s of [a, b]) {
    s.setNoDelay(true);
    s.on('error', (err: NodeJS.ErrnoException) => kill(err.code ?? 'error'));
    s.setTimeout(limits.idleTimeoutMs, () => kill('idle timeout'));
    s.once('close', () => {
      // A side that closed without ending cleanly takes the other with it.
      if (!s.readableEnded || !s.writableFinished) kill(why === 'closed' ? 'peer closed' : why);
      if (++closed === 2) {
        clearTimeout(lifetime);
        done(stats, why);
      }
    });
  }
  const lifetime = limits.maxLifetimeMs > 0 ? setTimeout(() => kill('max lifetime'), limits.maxLifetimeMs) : undefined;
  lifetime?.unref();
}
