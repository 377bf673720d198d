import net from 'node:net';
import { relayReads } from './bulk.js';
import type { Address, Limits } from './config.js';

export interface RelayStats {
  /** Bytes from the accepting side to the other (client -> target). */
  up: number;
  down: number;
  /** Directions (0-2) that switched to bulk reads. */
  bulk: number;
}

export function connectOptions(a: Address): net.NetConnectOpts {
  return 'path' in a ? { path: a.path, allowHalfOpen: true } : { host: a.host, port: a.port, allowHalfOpen: true };
}

interface Live {
  stats: RelayStats;
  /** Bytes both ways at the last sweep that saw them change, and when that was. */
  seen: number;
  last: number;
  idleMs: number;
  deadline: number;
  kill: (why: string) => void;
}

/**
 * Idle and lifetime limits are checked by one sweep for all relays rather than by a timer per socket:
 * `socket.setTimeout` re-arms a timer on every read and write, which measurably slowed bulk transfers. Activity
 * is read off the byte counts at each sweep, so a read does no clock call; an idle close comes at most one
 * sweep (250 ms) later than the limit, never earlier.
 */
const live = new Set<Live>();
let sweeper: NodeJS.Timeout | undefined;
const SWEEP_MS = 250;

function sweep(): void {
  const now = Date.now();
  for (const r of live) {
    const bytes = r.stats.up + r.stats.down;
    if (now >= r.deadline) r.kill('max lifetime');
    else if (bytes !== r.seen) {
      r.seen = bytes;
      r.last = now;
    } else if (now - r.last >= r.idleMs) r.kill('idle timeout');
  }
  if (live.size === 0) {
    clearInterval(sweeper);
    sweeper = undefined;
  }
}

/**
 * Pipes two connected sockets both ways with backpressure and correct half-close (an 'end' from one side ends
 * the other's write side only; the other direction keeps flowing). Either side failing, idling past the limit
 * (checked every 250 ms) or outliving its lifetime destroys both. `done` runs once, when both are closed.
 */
export function relay(
  a: net.Socket,
  b: net.Socket,
  limits: Pick<Limits, 'idleTimeoutMs' | 'maxLifetimeMs'>,
  done: (stats: RelayStats, why: string) => void,
): void {
  const stats: RelayStats = { up: 0, down: 0, bulk: 0 };
  let why = 'closed';
  let closed = 0;
  const kill = (reason: string) => {
    if (why === 'closed') why = reason;
    a.destroy();
    b.destroy();
  };
  const entry: Live = {
    stats,
    seen: 0,
    last: Date.now(),
    idleMs: limits.idleTimeoutMs,
    deadline: limits.maxLifetimeMs > 0 ? Date.now() + limits.maxLifetimeMs : Infinity,
    kill,
  };
  live.add(entry);
  sweeper ??= setInterval(sweep, SWEEP_MS).unref();
  // Per direction: count, write; pause on backpressure, resume on drain; an end ends the
  // other's writes. Reads go through relayReads (bulk.ts: no Buffer allocation or stream event per read); a
  // Node without its internals gets one 'data' listener per direction doing the same.
  const wire = (from: net.Socket, to: net.Socket, up: boolean) => {
    const count = (n: number) => {
      if (up) stats.up += n;
      else stats.down += n;
    };
    if (!relayReads(from, to, count, () => stats.bulk++)) {
      from.on('data', (d: Buffer) => {
        count(d.length);
        if (!to.write(d)) from.pause();
      });
    }
    to.on('drain', () => from.resume());
    // A side whose end came before the relay began (a client that sent its last bytes or reset right after its
    // handshake, while the target was connecting) has no 'end' to come: end the other side now, or the target
    // connection stayed open until the idle timeout (test/proxy/admission-resets.test.ts).
    if (from.readableEnded) to.end();
    else from.on('end', () => to.end());
  };
  wire(a, b, true);
  wire(b, a, false);
  const onClose = (s: net.Socket) => {
    // A side that closed without ending cleanly takes the other with it.
    if (!s.readableEnded || !s.writableFinished) kill(why === 'closed' ? 'peer closed' : why);
    if (++closed === 2) {
      live.delete(entry);
      done(stats, why);
    }
  };
  for (const s of [a, b]) {
    s.on('error', (err: NodeJS.ErrnoException) => kill(err.code ?? 'error'));
    // A side that is already gone (closed while the other was connecting) never emits 'close' again.
    if (s.destroyed) {
      queueMicrotask(() => onClose(s));
      continue;
    }
    s.setNoDelay(true);
    s.once('close', () => onClose(s));
  }
}
