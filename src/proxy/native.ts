import crypto from 'node:crypto';
import type tls from 'node:tls';
import { MtlsError } from '../errors.js';
import type { Address } from '../io/address.js';
import { addonUnavailable, loadAddon } from '../io/addon.js';
import type { Crl } from '../pki/crl.js';
import type { Limits } from './config.js';

/**
 * The native data path (native/, built by `npm ci` with node-gyp against Node's own headers and OpenSSL):
 * one thread per listener does the TLS handshakes and relays the bytes; JavaScript accepts, decides and counts.
 * See docs/proxy.md ("Engines").
 */
interface Binding {
  /** Closed events carry the reason as its index in closeReasons. */
  create(
    onEvent: (e: SecuredEvent | (Omit<ClosedEvent, 'reason'> & { reason: number })) => void,
    threads: number,
  ): unknown;
  configure(
    engine: unknown,
    cert: string,
    key: string,
    ca: string,
    revoked: Buffer | null,
    ticketKeys: Buffer,
    ciphers: string,
    groups: string,
    minVersion: string,
    apply: boolean,
  ): void;
  setTicketKeys(engine: unknown, keys: Buffer): void;
  setLimits(engine: unknown, handshakeMs: number, idleMs: number, lifetimeMs: number): void;
  setStaple(engine: unknown, staple: Buffer | null): void;
  setReportIssuer(engine: unknown, on: boolean): void;
  add(engine: unknown, fd: number): number;
  admit(engine: unknown, id: number, host: string, port: number, header: Buffer | null): void;
  reject(engine: unknown, id: number): void;
  close(engine: unknown, id: number): void;
  closeAll(engine: unknown): void;
  destroy(engine: unknown): void;
  openssl: string;
  /** CloseReason's names in the addon's order (checked against CLOSE_REASONS by test/proxy/native.test.ts). */
  closeReasons: string[];
}

/** Why the native engine closed a connection: the order of `enum class CloseReason` in native/relay.h. */
export const CLOSE_REASONS = [
  'closed',
  'peer closed',
  'denied',
  'handshake failed',
  'verify failed',
  'handshake timeout',
  'idle timeout',
  'max lifetime',
  'drain timeout',
  'target unreachable',
  'io error',
  'out of memory',
  'no TLS context',
  'engine stopped',
  'revoked',
] as const;
export type CloseReason = (typeof CLOSE_REASONS)[number];

/** The handshake finished and the chain verified; `der` is the client's certificate (also on resumption). */
export interface SecuredEvent {
  type: 'secured';
  id: number;
  der?: Buffer;
  /** The issuer OpenSSL verified `der` with (full handshakes only). */
  issuer?: Buffer;
  version: string;
  cipher: string;
  servername: string;
  resumed: boolean;
}

/** The connection is gone (every connection ends with exactly one). */
export interface ClosedEvent {
  type: 'closed';
  id: number;
  /** Where it was: handshake, deciding (waiting for admit/reject), connecting (to the target), relay. */
  stage: 'handshake' | 'deciding' | 'connecting' | 'relay';
  /** Why it closed. */
  reason: CloseReason;
  /** For a failed handshake, target or socket: Node's code (CERT_HAS_EXPIRED, ERR_SSL_..., ECONNREFUSED). */
  code: string;
  /** OpenSSL's or the system's words for `code`, when there are some. */
  detail: string;
  /** Bytes read from the client before the end of the handshake (0: a probe that sent nothing). */
  bytesIn: number;
  up: number;
  down: number;
}

export type NativeEvent = SecuredEvent | ClosedEvent;

/** The addon's relay engine, or null when it was not built or does not load (`nativeUnavailable()` says why). */
export function nativeBinding(): Binding | null {
  return loadAddon<Binding>();
}

export function nativeUnavailable(): string | undefined {
  return addonUnavailable();
}

const text = (v: unknown): string =>
  v === undefined
    ? ''
    : Array.isArray(v)
      ? v.map(text).join('\n')
      : Buffer.isBuffer(v)
        ? v.toString('latin1')
        : String(v);

/** Node's secure-context options, and the revocation sets the engine checks in its verify callback. */
export type NativeContextOptions = tls.SecureContextOptions & { revoked?: Buffer };

/**
 * The CRLs as the engine reads them (native/context.cc parseRevocations): per CRL, u32 issuer length, the issuer
 * Name's DER, u32 count, then each serial's INTEGER content octets behind a u8 length. The engine looks each
 * certificate of a client chain up in a hash set: Node's `crl` option made a handshake 2.8x dearer at
 * 100,000 entries.
 */
export function encodeRevocations(crls: readonly Crl[]): Buffer {
  const parts: Buffer[] = [];
  for (const c of crls) {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(c.issuerDer.length);
    const count = Buffer.alloc(4);
    count.writeUInt32BE(c.revoked.size);
    parts.push(head, c.issuerDer, count);
    let size = 0;
    for (const hex of c.revoked) size += 1 + hex.length / 2;
    const serials = Buffer.alloc(size);
    let at = 0;
    for (const hex of c.revoked) {
      const n = hex.length / 2;
      // RFC 5280 allows 20 octets; the engine compares up to 126 (longer ones are no certificate's serial here).
      if (n === 0 || n > 126) throw new MtlsError('BAD_INPUT', `a CRL lists a serial of ${n} octets`);
      serials[at++] = n;
      at += serials.write(hex, at, 'hex');
    }
    parts.push(serials.subarray(0, at));
  }
  return Buffer.concat(parts);
}

/**
 * The native relay of one listener. It takes secure-context options as Node's server does, so
 * CredentialReloader swaps its certificate, trust and revocation sets like a tls.Server's.
 */
export class NativeEngine {
  private readonly b: Binding;
  private readonly handle: unknown;
  private keys = crypto.randomBytes(48);
  private destroyed = false;

  /** `threads`: event loops, each a thread of its own; connections are spread over them in turn. */
  constructor(onEvent: (e: NativeEvent) => void, threads = 1) {
    const b = nativeBinding();
    if (!b) throw new MtlsError('ENGINE_UNAVAILABLE', nativeUnavailable()!);
    this.b = b;
    this.handle = b.create((e) => {
      if (e.type === 'secured') return onEvent(e);
      const reason = CLOSE_REASONS[e.reason];
      if (reason === undefined)
        throw new MtlsError(
          'INTERNAL',
          `the native engine sent close reason ${e.reason}, which TypeScript does not know`,
        );
      onEvent({ ...e, reason });
    }, threads);
  }

  /**
   * cert, key, ca, crl and ticketKeys of Node's options (PEM); throws with OpenSSL's reason and keeps the old
   * context. The new context is born with its ticket keys (`o.ticketKeys`, else the current ones): a ticket is only
   * ever sealed and opened by the context that verified its session (src/tls/reload.ts).
   */
  setSecureContext(o: NativeContextOptions): void {
    const keys = o.ticketKeys ?? this.keys;
    this.configure(o, keys, true);
    this.keys = Buffer.from(keys);
  }

  /** Throws what setSecureContext would, changing nothing. */
  checkSecureContext(o: NativeContextOptions): void {
    this.configure(o, this.keys, false);
  }

  /** The TLS policy comes with the options (serverTlsOptions): the addon has no copy of its own. */
  private configure(o: NativeContextOptions, keys: Buffer, apply: boolean): void {
    if (!o.ciphers || !o.ecdhCurve || !o.minVersion) {
      throw new MtlsError('INTERNAL', 'the native engine needs ciphers, ecdhCurve and minVersion in its TLS options');
    }
    if (o.crl !== undefined)
      throw new MtlsError('INTERNAL', 'the native engine takes CRLs as revocation sets (encodeRevocations), not PEM');
    this.b.configure(
      this.handle,
      text(o.cert),
      text(o.key),
      text(o.ca),
      o.revoked ?? null,
      keys,
      o.ciphers,
      o.ecdhCurve,
      o.minVersion,
      apply,
    );
  }

  getTicketKeys(): Buffer {
    return Buffer.from(this.keys);
  }

  setTicketKeys(keys: Buffer): void {
    this.b.setTicketKeys(this.handle, keys);
    this.keys = Buffer.from(keys);
  }

  setLimits(l: Limits): void {
    this.b.setLimits(this.handle, l.handshakeTimeoutMs, l.idleTimeoutMs, l.maxLifetimeMs);
  }

  /** The DER OCSP response stapled to every handshake whose client asks, from now on; null staples nothing. */
  setStaple(der: Buffer | null): void {
    this.b.setStaple(this.handle, der);
  }

  /** Whether secured events carry `issuer` (the OCSP check of clients needs it; others pay nothing for it). */
  reportIssuer(on: boolean): void {
    this.b.setReportIssuer(this.handle, on);
  }

  /** Hands over an accepted socket's descriptor (the caller then closes its own handle); returns the id. */
  add(fd: number): number {
    return this.b.add(this.handle, fd);
  }

  /** Lets connection `id` through to `target` (an IP address and port, or a unix socket), `header` first. */
  admit(id: number, target: Address, header?: Buffer): void {
    if ('path' in target) this.b.admit(this.handle, id, target.path, 0, header ?? null);
    else this.b.admit(this.handle, id, target.host, target.port, header ?? null);
  }

  reject(id: number): void {
    this.b.reject(this.handle, id);
  }

  /** Ends one connection at any stage, relaying included (closed event: reason 'revoked'). */
  close(id: number): void {
    this.b.close(this.handle, id);
  }

  closeAll(): void {
    this.b.closeAll(this.handle);
  }

  /** Stops the thread (closing what is left). */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.b.destroy(this.handle);
  }
}
