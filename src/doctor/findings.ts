import type { KeyObject } from 'node:crypto';
import type { Certificate } from '../pki/certificate.js';
import type { HandshakeView } from '../trace/analyze.js';
import type { Diagnosis, DoctorCheck, DoctorReport } from './codes.js';
import type { HttpAnswer } from './http-probe.js';

/** What the diagnosis needs to know about the caller's side (doctor's options but the sockets' own). */
export interface OurSide {
  host: string;
  port: number;
  /** Our client chain and key (PEM); omit both to connect without a certificate. */
  cert?: string | Buffer;
  /** Where `cert` came from, to name it in advice (`mtls renew FILE`). */
  certFile?: string;
  key?: string | Buffer | KeyObject;
  passphrase?: string;
  servername?: string;
  /** Expect this SPIFFE ID (pattern) instead of the host name. */
  spiffeId?: string;
  /** Per-connection deadline. Default 5 s. */
  timeoutMs?: number;
  /** Clock skew above this is reported. Default 60 s. */
  maxSkewMs?: number;
}

/** What one real connection showed. */
export interface Attempt {
  error?: NodeJS.ErrnoException;
  chain: Certificate[];
  protocol?: string;
  cipher?: string;
  /** The server closed (or reset) the connection within the confirm window after our handshake. */
  closedAfterHandshake: boolean;
  /** The answer to GET / after the handshake (HTTPS servers). */
  http?: HttpAnswer;
  view: HandshakeView;
  firstServerBytes: Buffer;
  /** The server certificate's revocation status: its staple, else its OCSP responder; absent when not checked. */
  serverRevocation?: RevocationSeen;
}

/** A revocation status as doctor saw it, and where it came from (a staple, a responder), or why it could not. */
export type RevocationSeen =
  | { status: 'good' | 'revoked' | 'unknown'; source: string; revokedAt?: Date; reason?: string }
  | { status: 'failed'; source: string; why: string };

/** What the server speaks when it refused our offer (TLS 1.0+, any cipher), or undefined when it refused that too. */
export type LegacyProbe = { protocol: string; cipher: string } | undefined;

/** The doctor's running record: the checks so far and how a report is made from them. */
export class Findings {
  readonly checks: DoctorCheck[] = [];
  constructor(readonly target: string) {}

  check(name: string, ok: boolean | null, detail: string): boolean | null {
    this.checks.push({ name, ok, detail });
    return ok;
  }

  report(d: Diagnosis, a?: Attempt): DoctorReport {
    return {
      target: this.target,
      ok: d.code === 'OK',
      diagnosis: d,
      checks: this.checks,
      ...(a?.protocol ? { protocol: a.protocol } : {}),
      ...(a?.cipher ? { cipherSuite: a.cipher } : {}),
    };
  }
}
