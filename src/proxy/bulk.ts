import net from 'node:net';

/**
 * Reads for relayed sockets without a Buffer allocation and a Readable-stream event per read. That is Node's
 * `onread` mode of net.Socket (public for sockets it creates, `net.connect({ onread })`); Node does not offer it
 * for sockets a server accepts or for a TLS socket over one, so this switches an open socket into it the way
 * net.Socket's constructor does.
 *
 * A direction starts on a read buffer shared by all connections (one per read size) and copies each read out
 * into a Buffer of the right size before anything else runs: an idle or interactive connection holds no read
 * buffer, and a read no longer costs a 64 KiB allocation. Once a direction has carried 256 KiB it gets buffers
 * of its own and writes straight from them (bulk). Measured on an upload through the proxy (BENCHMARKS.md):
 * the proxy's CPU per GB fell by about a quarter (malloc, the stream machinery and GC gone).
 *
 * It relies on three symbols of Node's net.js, found by their descriptions and checked on a probe socket at
 * first use; on a Node without them `relayReads` returns false and the caller keeps the stream path.
 *
 * A buffer must never be overwritten while a write still points into it: the shared one is never written from
 * (copied out at once); one of a connection's own is read into again only after the callbacks of all writes
 * from it have run; until then reads go to another of a small pool. A test for each rule fails without it.
 *
 * Writes are corked for the rest of the event-loop turn (or until 64 KiB wait): one TCP read from a TLS peer
 * brings several 16 KiB records, written with one writev instead of one write each. With TCP_NODELAY on (for
 * interactive traffic), separate writes also meant a separate segment each; measured on a 256 MiB upload, the
 * proxy's CPU per GB fell by about a quarter more (BENCHMARKS.md).
 */
interface Internals {
  buffer: symbol;
  callback: symbol;
  next: symbol;
}

let internals: Internals | null | undefined;

function probe(): Internals | null {
  if (internals !== undefined) return internals;
  const marker = Buffer.alloc(1);
  const s = new net.Socket({ onread: { buffer: marker, callback: () => true } } as net.SocketConstructorOpts);
  const find = (d: string) => Object.getOwnPropertySymbols(s).find((x) => x.description === d);
  const [buffer, callback, next] = [find('kBuffer'), find('kBufferCb'), find('kBufferGen')];
  const slots = s as unknown as Record<symbol, unknown>;
  internals =
    buffer && callback && next && slots[buffer] === marker && typeof slots[callback] === 'function'
      ? { buffer, callback, next }
      : null;
  s.destroy();
  return internals;
}

/** Buffers kept per direction (corked writes hold several); beyond that a busy direction allocates. */
const POOL = 8;
/** Corked bytes that are written at once without waiting for the end of the event-loop turn. */
const FLUSH_AT = 64 * 1024;
/** Reads stop (until 'drain') once this much waits to be written. */
const MAX_QUEUED = 256 * 1024;

interface Slot {
  buf: Buffer;
  /** Writes from this buffer not yet completed. */
  pending: number;
  release: () => void;
}

interface StreamHandle {
  useUserBuffer?: (b: Uint8Array) => void;
}

/** Read size per socket kind: a TLS socket hands over at most one record (16 KiB) per read. */
function readSize(s: net.Socket): number {
  return 'encrypted' in s ? 16 * 1024 : 64 * 1024;
}

/**
 * Read buffers shared by every connection still in its first BULK_AFTER bytes (one per read size): what lands
 * in one is copied out at once, before anything else runs, so it is free again when the read callback returns.
 */
const shared = new Map<number, Buffer>();

function sharedBuffer(size: number): Buffer {
  let b = shared.get(size);
  if (!b) shared.set(size, (b = Buffer.allocUnsafeSlow(size)));
  return b;
}

/** Bytes a direction carries (in shared mode) before it gets buffers of its own. */
const BULK_AFTER = 256 * 1024;

/**
 * Relays the reads of `from` into `to` in onread mode: bytes already buffered in the stream are written first,
 * then every read calls `count(n)` and writes. A direction starts on the shared buffer (each read copied into a
 * right-sized Buffer: no 64 KiB allocation per read, no stream event); once it has carried BULK_AFTER bytes it
 * moves to buffers of its own (no copy, writes corked) and `onBulk` runs. Backpressure stops the reads (the
 * caller's 'drain' listener resumes them) and the end of `from` still arrives as 'end'. Returns false and
 * changes nothing when this Node lacks the internals (the caller keeps the stream path).
 */
export function relayReads(from: net.Socket, to: net.Socket, count: (n: number) => void, onBulk: () => void): boolean {
  const k = probe();
  const handle = (from as unknown as { _handle?: StreamHandle })._handle;
  if (!k || !handle || typeof handle.useUserBuffer !== 'function' || from.destroyed) return false;
  const size = readSize(from);
  const sharedBuf = sharedBuffer(size);
  let carried = 0;
  // A buffer of our own is read into again only when every write from it has completed (its callbacks ran).
  const slot = (): Slot => {
    const sl: Slot = {
      buf: Buffer.allocUnsafeSlow(size),
      pending: 0,
      release: () => {
        sl.pending--;
      },
    };
    return sl;
  };
  let cur: Slot | undefined;
  const pool: Slot[] = [];
  from.pause();
  const slots = from as unknown as Record<symbol, unknown>;
  slots[k.buffer] = sharedBuf;
  let corked = 0;
  const flush = () => {
    if (corked === 0) return;
    corked = 0;
    to.uncork();
  };
  slots[k.callback] = (n: number): boolean => {
    count(n);
    if (!cur) {
      const copy = Buffer.allocUnsafe(n);
      sharedBuf.copy(copy, 0, 0, n);
      carried += n;
      return to.write(copy);
    }
    cur.pending++;
    // Only a large read is corked (more is likely on its way); a small one, the end of a burst or a message,
    // is not held back for the rest of the turn (unless it follows corked bytes, which it must not overtake).
    if (corked > 0) corked += n;
    else if (n >= size / 2) {
      to.cork();
      setImmediate(flush);
      corked = n;
    }
    to.write(cur.buf.subarray(0, n), cur.release);
    if (corked >= FLUSH_AT) flush();
    // Keep reading while a moderate amount waits (each corked write alone exceeds the 16 KiB high-water mark).
    return to.writableLength < MAX_QUEUED;
  };
  slots[k.next] = (): Buffer => {
    if (!cur) {
      if (carried < BULK_AFTER) return sharedBuf;
      pool.push((cur = slot()));
      onBulk();
    } else if (cur.pending > 0) {
      const free = pool.find((sl) => sl.pending === 0);
      if (free) cur = free;
      else {
        cur = slot();
        if (pool.length < POOL) pool.push(cur);
      }
    }
    return cur.buf;
  };
  handle.useUserBuffer(sharedBuf);
  // What the stream buffered before the switch goes first (read() with the stream paused returns all of it).
  const before = from.read() as Buffer | null;
  if (before) {
    count(before.length);
    to.write(before);
  }
  // In onread mode, pause()/resume() stop and start the socket's reads.
  if (to.writableNeedDrain) from.pause();
  else from.resume();
  return true;
}
