/**
 * Octets read in pieces rather than held whole (issue 14). A revocation appends one entry to the 5 MB CRL
 * published last and reuses most of the 6.6 MB crl.pem: it reads both through one small buffer (src/io/files.ts
 * fileRange) to count, hash and write them, instead of reading them into 11 MB of memory, which on these VMs costs
 * ~3 ms per MB the first time it is touched (the first revocation of a process took ~100 ms, the others ~26).
 */
export interface Octets {
  readonly length: number;
  /** The octets in order, in pieces; each piece is valid only until the next is asked for. */
  chunks(): Iterable<Uint8Array>;
  /** A copy of the octets [from, to): for a few of them. */
  read(from: number, to: number): Buffer;
  /** The octets [from, to), as Octets. */
  range(from: number, to: number): Octets;
}

/** A part of something to hash or write: octets in memory, or octets read in pieces. */
export type Part = Buffer | Octets;

export function* chunksOf(p: Part): Iterable<Uint8Array> {
  if (Buffer.isBuffer(p)) yield p;
  else yield* p.chunks();
}

/** The octets [from, to) of `p` (a view of a Buffer, a copy from Octets). */
export const readOf = (p: Part, from: number, to: number): Buffer =>
  Buffer.isBuffer(p) ? p.subarray(from, to) : p.read(from, to);

export const rangeOf = (p: Part, from: number, to: number): Part =>
  Buffer.isBuffer(p) ? p.subarray(from, to) : p.range(from, to);

/** The octets [from, to) of the concatenation of `parts`, joined: for a few of them. */
export function sliceParts(parts: Part[], from: number, to: number): Buffer {
  const out: Buffer[] = [];
  let at = 0;
  for (const p of parts) {
    const lo = Math.max(from - at, 0);
    const hi = Math.min(to - at, p.length);
    if (hi > lo) out.push(readOf(p, lo, hi));
    at += p.length;
  }
  return Buffer.concat(out);
}
