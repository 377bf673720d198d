import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { MtlsError } from '../errors.js';

/** A file to be written: `mode` 0o600 for anything secret. */
export interface PendingFile {
  path: string;
  /** The contents; parts are written as they are (writev, or piece by piece), never joined. */
  data: string | Buffer | (Buffer | FileOctets)[];
  mode: number;
}

function ioError(action: string, p: string, err: unknown): MtlsError {
  const code = (err as NodeJS.ErrnoException).code;
  const hint =
    code === 'EACCES' || code === 'EPERM'
      ? 'check the permissions of the directory'
      : code === 'ENOENT'
        ? 'create the directory first'
        : code === 'ENOSPC'
          ? 'free some disk space'
          : 'check the path';
  return new MtlsError('IO', `cannot ${action} ${p} (${code ?? (err as Error).message}); ${hint}`, { cause: err });
}

/**
 * Test-only: `MTLS_CRASH_AT=<point>[:SIGNAL]` sends the process a signal (SIGKILL by default) at that point, so
 * that a test can prove each step of a write leaves a consistent state (test/ca/crash.test.ts). Points:
 * after-record, after-stage, between-renames, init-staged.
 */
export function crashPoint(point: string): boolean {
  const [at, signal] = (process.env['MTLS_CRASH_AT'] ?? '').split(':');
  if (at !== point) return false;
  process.kill(process.pid, (signal || 'SIGKILL') as NodeJS.Signals);
  return true;
}

/** Temporary files of a staged write that died (`.NAME.<hex>.tmp`), removed once they are this old. */
const STALE_TMP_MS = 60_000;
const TMP_RE = /^\..+\.[0-9a-f]{12}\.tmp$/;
const JOURNAL_RE = /^\..+\.[0-9a-f]{12}\.commit$/;

function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch {
    // not every file system lets a directory be synced
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Finishes what a crashed write left in `dir`: a commit journal (the renames of a replacement that had begun) is
 * rolled forward, so a certificate and its key never stay mismatched; old temporaries are removed.
 */
export function recoverDir(dir: string, now = Date.now()): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names.filter((x) => JOURNAL_RE.test(x))) {
    const journal = path.join(dir, n);
    try {
      const parsed = JSON.parse(fs.readFileSync(journal, 'utf8')) as Journal | Journal['moves'];
      // A journal of a writer still renaming (another replica on this home, mid-commit) is its own: replaying it
      // would move its files from under it. Only a dead writer's journal, or one older than a minute, is finished.
      if (!Array.isArray(parsed) && writerAlive(parsed, journal, now)) continue;
      for (const m of Array.isArray(parsed) ? parsed : parsed.moves) {
        // Only moves inside this directory: a journal is not a way to rename files elsewhere.
        if (path.dirname(m.tmp) !== dir || path.dirname(m.final) !== dir) continue;
        if (fs.existsSync(m.tmp)) fs.renameSync(m.tmp, m.final);
      }
      fsyncDir(dir);
      fs.rmSync(journal, { force: true });
    } catch {
      // a journal that cannot be read was never complete: its renames had not begun
      fs.rmSync(journal, { force: true });
    }
  }
  removeStale(dir, (n) => TMP_RE.test(n), now);
}

/** What a commit of several files writes before its renames: the renames, and who makes them. */
interface Journal {
  pid: number;
  host: string;
  moves: { tmp: string; final: string }[];
}

/**
 * Whether the writer of `journal` may still be renaming: younger than a minute, and its process alive on this
 * host (a journal from another host, e.g. a home on shared storage, counts as alive until it is a minute old).
 */
function writerAlive(j: Journal, journal: string, now: number): boolean {
  if (now - fs.statSync(journal).mtimeMs > STALE_TMP_MS) return false;
  if (j.host !== os.hostname()) return true;
  try {
    process.kill(j.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes what a killed process of ours left in `dir` (names that `match`: temporaries, staging directories with
 * key material) once older than a minute; a live writer's files are younger.
 */
export function removeStale(dir: string, match: (name: string) => boolean, now = Date.now()): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names.filter(match)) {
    const p = path.join(dir, n);
    try {
      if (now - fs.lstatSync(p).mtimeMs > STALE_TMP_MS) fs.rmSync(p, { recursive: true, force: true });
    } catch {
      // gone meanwhile
    }
  }
}

/** Writes every octet of `parts` (writev may write less than asked). */
function writeBuffers(fd: number, parts: Uint8Array[]): void {
  let rest = parts.filter((p) => p.length);
  while (rest.length) {
    let n = fs.writevSync(fd, rest.slice(0, 1024));
    while (rest.length && n >= rest[0]!.length) n -= rest.shift()!.length;
    if (n > 0) rest[0] = rest[0]!.subarray(n);
  }
}

/** Writes every octet of `parts`: runs of buffers with writev, octets read in pieces piece by piece. */
function writeAll(fd: number, parts: (Buffer | FileOctets)[]): void {
  let run: Buffer[] = [];
  for (const p of parts) {
    if (Buffer.isBuffer(p)) {
      run.push(p);
      continue;
    }
    writeBuffers(fd, run);
    run = [];
    for (const c of p.chunks()) writeBuffers(fd, [c]);
  }
  writeBuffers(fd, run);
}

/**
 * Writes several files so that either all appear or none does: each goes to a temporary file in the same
 * directory (created with its final mode, so a key is never world-readable), is fsynced, and the returned
 * `commit` renames them all into place. `abort` removes the temporaries. Refuses to replace existing files
 * unless `overwrite`. A replacement (a certificate and its key, say) is journaled before its renames, so that a
 * crash between them is completed by the next write to that directory (recoverDir) instead of leaving a new
 * certificate beside the old key.
 */
export function stageFiles(
  files: PendingFile[],
  opts: { overwrite?: boolean } = {},
): { commit: () => void; abort: () => void } {
  const staged: { tmp: string; final: string }[] = [];
  const abort = () => {
    for (const s of staged) fs.rmSync(s.tmp, { force: true });
  };
  for (const dir of new Set(files.map((f) => path.dirname(f.path)))) recoverDir(dir);
  try {
    for (const f of files) {
      if (!opts.overwrite && fs.existsSync(f.path)) {
        throw new MtlsError(
          'FILE_EXISTS',
          `${f.path} already exists; remove it or choose another name or --out directory`,
        );
      }
      const tmp = path.join(
        path.dirname(f.path),
        `.${path.basename(f.path)}.${crypto.randomBytes(6).toString('hex')}.tmp`,
      );
      let fd: number;
      try {
        fd = fs.openSync(tmp, 'wx', f.mode);
      } catch (err) {
        throw ioError('write', f.path, err);
      }
      staged.push({ tmp, final: f.path });
      try {
        fs.fchmodSync(fd, f.mode);
        writeAll(fd, typeof f.data === 'string' ? [Buffer.from(f.data)] : Buffer.isBuffer(f.data) ? [f.data] : f.data);
        fs.fsyncSync(fd);
      } catch (err) {
        throw ioError('write', f.path, err);
      } finally {
        fs.closeSync(fd);
      }
    }
  } catch (err) {
    abort();
    throw err;
  }
  crashPoint('after-stage');
  return {
    commit: () => {
      const replacing = staged.length > 1 && staged.some((s) => fs.existsSync(s.final));
      const journal = replacing
        ? path.join(
            path.dirname(staged[0]!.final),
            `.${path.basename(staged[0]!.final)}.${crypto.randomBytes(6).toString('hex')}.commit`,
          )
        : undefined;
      if (journal) {
        if (staged.some((s) => path.dirname(s.final) !== path.dirname(journal)))
          throw new MtlsError('IO', 'a replacement must stay in one directory');
        const fd = fs.openSync(journal, 'wx', 0o600);
        try {
          fs.writeSync(fd, JSON.stringify({ pid: process.pid, host: os.hostname(), moves: staged } satisfies Journal));
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
      }
      for (let i = 0; i < staged.length; i++) {
        const s = staged[i]!;
        if (i === 1) crashPoint('between-renames');
        try {
          fs.renameSync(s.tmp, s.final);
        } catch (err) {
          if (i > 0 && journal) {
            // Some files are replaced already: finish from the journal rather than leave a mismatched pair.
            recoverDir(path.dirname(journal));
            throw ioError('write', s.final, err);
          }
          abort();
          if (journal) fs.rmSync(journal, { force: true });
          throw ioError('write', s.final, err);
        }
      }
      if (journal) {
        fsyncDir(path.dirname(journal));
        fs.rmSync(journal, { force: true });
      }
    },
    abort,
  };
}

/** Writes one file atomically (temp file, fsync, rename). */
export function writeFileAtomic(p: string, data: string | Buffer, mode = 0o644, overwrite = true): void {
  stageFiles([{ path: p, data, mode }], { overwrite }).commit();
}

/**
 * The most we read of each kind of input: an endless or huge input (`/dev/zero`, a wrong file, a hostile pipe) is
 * refused with a line that says the limit instead of growing the process without bound.
 */
export const MAX_INPUT = {
  /** A certificate chain, key, CSR or PKCS#12 file. */
  certificate: 1 << 20,
  /** A trust bundle (the system's has a few hundred roots: about 200 KiB). */
  bundle: 16 << 20,
  /** CRL files: 100,000 entries take about 4 MiB of PEM. */
  crl: 256 << 20,
  /** A proxy config. */
  config: 1 << 20,
} as const;

const mib = (n: number) => (n >= 1 << 20 ? `${n / (1 << 20)} MiB` : `${n} bytes`);

/**
 * Reads a file for a command, with a one-line error naming it, never more than `max` bytes (a larger or endless
 * input is refused, whatever kind of file it is: regular, pipe, device). `-` reads standard input.
 */
export function readInput(p: string, what: string, max: number = MAX_INPUT.certificate): Buffer {
  const tooBig = () =>
    new MtlsError(
      'BAD_INPUT',
      `${what} ${p === '-' ? '(standard input)' : p} is larger than ${mib(max)}, ` +
        `the most accepted for it; check that it is the right file`,
    );
  let fd: number;
  try {
    fd = p === '-' ? 0 : fs.openSync(p, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new MtlsError('BAD_INPUT', `${what} ${p} does not exist`);
    if (code === 'EISDIR') throw new MtlsError('BAD_INPUT', `${what} ${p} is a directory; give a file`);
    throw ioError('read', p, err);
  }
  try {
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) throw new MtlsError('BAD_INPUT', `${what} ${p} is a directory; give a file`);
    if (st.isFile() && st.size > max) throw tooBig();
    const chunks: Buffer[] = [];
    let total = 0;
    const buf = Buffer.allocUnsafe(64 * 1024);
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        // a non-blocking standard input with nothing yet: wait a little, as a blocking read would
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') {
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
          continue;
        }
        throw err;
      }
      if (n === 0) break;
      total += n;
      if (total > max) throw tooBig();
      chunks.push(Buffer.from(buf.subarray(0, n)));
    }
    return Buffer.concat(chunks, total);
  } catch (err) {
    if (err instanceof MtlsError) throw err;
    throw ioError('read', p, err);
  } finally {
    if (fd !== 0) fs.closeSync(fd);
  }
}

/**
 * Which file the open `fd` is, as a string that changes with any replacement or change of it: its inode, size,
 * modification and change times (ns; a change time cannot be set back) and a hash of its last 512 octets. For a
 * published CRL those octets hold its signature, unique to each publication, even when the file system reuses a
 * freed inode within one tick of its clock (two publications then share inode, size and times). `st`: the fd's
 * fstat (bigint), when the caller has it.
 */
export function fileIdentity(fd: number, st = fs.fstatSync(fd, { bigint: true })): string {
  const tail = Buffer.alloc(Number(st.size < 512n ? st.size : 512n));
  const got = fs.readSync(fd, tail, 0, tail.length, Number(st.size) - tail.length);
  return crypto
    .createHash('sha256')
    .update(`${st.ino} ${st.size} ${st.mtimeNs} ${st.ctimeNs}\n`)
    .update(tail.subarray(0, got))
    .digest('hex')
    .slice(0, 32);
}

/**
 * Opens `file` and gives `use` its descriptor, fstat (bigint) and identity (fileIdentity), then closes it: what is
 * read through `fd` is the file identified, even when `file` is replaced meanwhile.
 */
export function withIdentifiedFile<T>(file: string, use: (f: { fd: number; st: fs.BigIntStats; id: string }) => T): T {
  const fd = fs.openSync(file, 'r');
  try {
    const st = fs.fstatSync(fd, { bigint: true });
    return use({ fd, st, id: fileIdentity(fd, st) });
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Octets of a file read in pieces (the shape of src/pki/octets.ts Octets, which the pure layers take): see
 * fileRange.
 */
export interface FileOctets {
  readonly length: number;
  /** The octets in order, in pieces; each piece is valid only until the next is asked for. */
  chunks(): Iterable<Uint8Array>;
  /** A copy of the octets [from, to): for a few of them. */
  read(from: number, to: number): Buffer;
  range(from: number, to: number): FileOctets;
}

/** Octets of a file read at a time, through one buffer kept for the process's life. */
const PIECE = 256 * 1024;
let pieceBuffer: Buffer | undefined;

function readExactly(fd: number, into: Buffer, length: number, position: number): void {
  for (let n = 0; n < length;) {
    const got = fs.readSync(fd, into, n, length - n, position + n);
    if (got === 0) throw new MtlsError('IO', 'a file became shorter while it was read; try again');
    n += got;
  }
}

/**
 * The octets [start, end) of the open file `fd`, read in pieces of `piece` octets into one buffer the process
 * keeps, never whole: a revocation counts, hashes and copies the 5 MB CRL and the 6.6 MB crl.pem it builds on this
 * way. On these VMs memory touched for the first time costs ~3 ms per MB (a first revocation read both files into
 * 15 MB of it: ~100 ms against ~26 for the next). Pieces of one range at a time: the buffer is shared. Bounded by
 * construction: a file that grows is read only to `end`; one that shrinks throws.
 */
export function fileRange(fd: number, start: number, end: number, piece = PIECE): FileOctets {
  const length = end - start;
  const within = (from: number, to: number) => {
    if (!(from >= 0 && from <= to && to <= length))
      throw new RangeError(`[${from}, ${to}) is not within ${length} octets`);
  };
  return {
    length,
    *chunks() {
      const buf = piece === PIECE ? (pieceBuffer ??= Buffer.allocUnsafeSlow(PIECE)) : Buffer.allocUnsafe(piece);
      for (let at = start; at < end; at += piece) {
        const n = Math.min(piece, end - at);
        readExactly(fd, buf, n, at);
        yield buf.subarray(0, n);
      }
    },
    read(from, to) {
      within(from, to);
      const b = Buffer.allocUnsafe(to - from);
      readExactly(fd, b, to - from, start + from);
      return b;
    },
    range(from, to) {
      within(from, to);
      return fileRange(fd, start + from, start + to, piece);
    },
  };
}

/**
 * A file holding a secret (a private key, a passphrase) must be private, as OpenSSH and ghostunnel require: refused
 * when another user could change it (group or other write), when other users could read it, or when it belongs
 * to someone other than us or root. Group read is allowed (the Debian ssl-cert group, Kubernetes fsGroup).
 */
export function checkPrivateFile(p: string, what: string): void {
  if (p === '-') return;
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    return; // the read that follows says what is wrong
  }
  if (!st.isFile()) return;
  const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
  if (st.mode & 0o027)
    throw new MtlsError(
      'BAD_INPUT',
      `${what} ${p} can be ${st.mode & 0o022 ? 'changed' : 'read'} by other users (mode ${mode}); run chmod 600 ${p}`,
    );
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid && st.uid !== 0)
    throw new MtlsError('BAD_INPUT', `${what} ${p} belongs to another user (uid ${st.uid}); it must be ours or root's`);
}

/** A passphrase from a file: the first line, which must not be empty. Never echoed. */
export function readPassphraseFile(p: string): string {
  checkPrivateFile(p, 'passphrase file');
  const text = readInput(p, 'passphrase file').toString('utf8');
  const first = text.split(/\r?\n/)[0] ?? '';
  if (first.length === 0)
    throw new MtlsError('BAD_INPUT', `passphrase file ${p} is empty; put the passphrase on its first line`);
  return first;
}
