import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { messageOf } from '../errors.js';
import { loadCredentials, type Credentials } from './credentials.js';

export interface WatchedFiles {
  certFile: string;
  keyFile: string;
  caFile: string;
  passphrase?: string;
  /** More files that feed the secure context (e.g. a CRL): a change to them reloads too. */
  extraFiles?: string[];
}

/** What a reload swaps: a tls.Server, or the proxy's native engine (src/proxy/native.ts). */
export interface ContextHolder {
  /** `options.ticketKeys`: the new context's session ticket keys (its own: the old context keeps the old ones). */
  setSecureContext(options: tls.SecureContextOptions): void;
  /** Throws if setSecureContext would (checked for every holder before any is changed). */
  checkSecureContext?(options: tls.SecureContextOptions): void;
  getTicketKeys(): Buffer;
  setTicketKeys(keys: Buffer): void;
}

interface Attached {
  server: ContextHolder;
  build: (c: Credentials) => tls.SecureContextOptions;
}

/** Emitted as 'reloaded'. */
export interface ReloadEvent {
  fingerprint256: string;
  trustChanged: boolean;
}

/**
 * Credentials that change while servers use them, and the swap of those servers' secure contexts: everything new is
 * built and checked first, then swapped; a failure keeps the old state. Live connections are untouched. Session
 * ticket keys are kept across a certificate rotation (setSecureContext would otherwise drop them) and replaced when
 * the trust changes, so sessions verified under the old trust cannot be resumed. Emits 'reloaded' (ReloadEvent).
 * Subclasses decide where new credentials come from: files (CredentialReloader) or a CA (RenewingCredentials).
 * mtlskit's servers, clients and agents accept one wherever they take `credentials`.
 */
export class CredentialHolder extends EventEmitter {
  private readonly attached: Attached[] = [];
  protected trust: Buffer;

  /**
   * `ticketKeys`: the session ticket keys for a trust digest (e.g. derived from a secret shared by a cluster's
   * workers, so that tickets resume on any worker); random when not given.
   */
  constructor(
    private creds: Credentials,
    protected readonly ticketKeys?: (trustDigest: Buffer) => Buffer,
  ) {
    super();
    this.trust = this.trustDigest(creds);
  }

  /** What the verification of peers depends on (the trust bundle, and what a subclass adds, e.g. CRL files). */
  protected trustDigest(c: Credentials): Buffer {
    return crypto.createHash('sha256').update(c.ca).digest();
  }

  get current(): Credentials {
    return this.creds;
  }

  /** Swap `server`'s context on every change, built by `build` from the new credentials. */
  attach(server: ContextHolder, build: (c: Credentials) => tls.SecureContextOptions): this {
    this.attached.push({ server, build });
    if (this.ticketKeys) server.setTicketKeys(this.ticketKeys(this.trust));
    return this;
  }

  /**
   * Builds every attached server's context from `next` and swaps them all, or none: throws (and changes nothing)
   * when one does not build.
   */
  protected apply(next: Credentials): void {
    const contexts = this.attached.map((a) => {
      const options = a.build(next);
      tls.createSecureContext(options); // prove it builds before touching any server
      a.server.checkSecureContext?.(options);
      return { a, options };
    });
    const trust = this.trustDigest(next);
    const trustChanged = !trust.equals(this.trust);
    for (const { a, options } of contexts) {
      // The new context is born with its keys (Node: options.ticketKeys; the native engine likewise): set after the
      // swap, a connection of the old context could seal its session, verified under the old trust, with the new keys.
      const ticketKeys = trustChanged ? (this.ticketKeys?.(trust) ?? crypto.randomBytes(48)) : a.server.getTicketKeys();
      a.server.setSecureContext({ ...options, ticketKeys });
    }
    this.creds = next;
    this.trust = trust;
    this.emit('reloaded', { fingerprint256: next.leaf.fingerprint256, trustChanged } satisfies ReloadEvent);
  }
}

/** The credentials of `c` now: itself, or what a CredentialHolder holds. */
export function currentCredentials(c: Credentials | CredentialHolder): Credentials;
export function currentCredentials(c: Credentials | CredentialHolder | undefined): Credentials | undefined;
export function currentCredentials(c: Credentials | CredentialHolder | undefined): Credentials | undefined {
  return c instanceof CredentialHolder ? c.current : c;
}

/**
 * Watches certificate, key and trust bundle files and swaps the secure context of attached servers when they
 * change (ghostunnel's certloader pattern); a broken file keeps the old state ('reload-error' says why). A change
 * to the trust bundle or a CRL among `extraFiles` replaces the session ticket keys.
 * Kubernetes-style swaps (a `..data` symlink replaced in the directory) are seen because the directories are
 * watched, not the files.
 */
export class CredentialReloader extends CredentialHolder {
  private watchers: fs.FSWatcher[] = [];
  private timer: NodeJS.Timeout | undefined;
  private digest: string;
  /** The content of the last reload that failed: the same broken files are not tried (and reported) again. */
  private failedDigest: string | undefined;

  constructor(
    private readonly files: WatchedFiles,
    private readonly debounceMs = 100,
    ticketKeys?: (trustDigest: Buffer) => Buffer,
  ) {
    super(loadCredentials(files), ticketKeys);
    this.trust = this.trustDigest(this.current); // super() could not read this.files yet
    this.digest = this.contentDigest();
  }

  /** The trust bundle and the extra files (CRLs): a resumed session would otherwise keep the old verdict. */
  protected override trustDigest(c: Credentials): Buffer {
    const h = crypto.createHash('sha256').update(c.ca);
    // this.files is undefined while super() runs: the constructor computes the digest again once it is set.
    for (const f of this.files?.extraFiles ?? []) {
      h.update('\0');
      try {
        h.update(fs.readFileSync(f));
      } catch {
        h.update('missing');
      }
    }
    return h.digest();
  }

  start(): this {
    const dirs = new Set(this.watched().map((f) => path.dirname(path.resolve(f))));
    const names = new Set(this.watched().map((f) => path.basename(f)));
    for (const dir of dirs) {
      // Only our files (or a Kubernetes-style '..data' swap) count: a log file written beside the certificates
      // would otherwise keep pushing the reload back.
      const w = fs.watch(dir, (_event, name) => {
        if (name === null || names.has(String(name)) || String(name).startsWith('..')) this.schedule();
      });
      w.on('error', (err) => this.emit('reload-error', new Error(`cannot watch ${dir}: ${err.message}`)));
      this.watchers.push(w);
    }
    return this;
  }

  stop(): void {
    for (const w of this.watchers) w.close();
    this.watchers = [];
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private watched(): string[] {
    return [this.files.certFile, this.files.keyFile, this.files.caFile, ...(this.files.extraFiles ?? [])];
  }

  /** When the first change of the pending burst was seen: a burst delays the reload by at most a second. */
  private burstStart = 0;

  private schedule(): void {
    const now = Date.now();
    if (this.timer && now - this.burstStart >= Math.max(1000, this.debounceMs)) return; // due soon: keep it
    if (!this.timer) this.burstStart = now;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.reload();
    }, this.debounceMs);
  }

  private contentDigest(): string {
    const h = crypto.createHash('sha256');
    for (const f of this.watched()) {
      try {
        h.update(fs.readFileSync(f));
      } catch {
        h.update('missing');
      }
      h.update('\0');
    }
    return h.digest('hex');
  }

  /** Re-reads the files now (also for SIGHUP). Resolves true when new credentials were applied. */
  async reload(): Promise<boolean> {
    const digest = this.contentDigest();
    if (digest === this.digest || digest === this.failedDigest) return false;
    try {
      this.apply(loadCredentials(this.files));
    } catch (err) {
      this.failedDigest = digest;
      this.emit('reload-error', new Error(`kept the previous certificate: ${messageOf(err)}`));
      return false;
    }
    this.digest = digest;
    this.failedDigest = undefined;
    return true;
  }
}
