import type { PeerIdentity } from '../identity/identity.js';
import { compilePolicy, describePeer as who, type Decision, type Policy } from '../identity/policy.js';
import { MtlsError } from '../errors.js';
import type { Certificate } from '../pki/certificate.js';
import type { Crl } from '../pki/crl.js';
import type { ReloadEvent } from '../tls/reload.js';
import { serverTlsOptions } from '../tls/options.js';
import type { Credentials } from '../tls/credentials.js';
import { chainNeeded, loadCrlFile, revocationFailure, staleCrl } from '../tls/crl-file.js';
import { OcspStapler } from '../tls/stapling.js';
import { OcspClientChecker } from '../tls/ocsp-clients.js';
import { formatDn } from '../pki/names.js';
import type { Limits, ServerListenerConfig } from './config.js';
import { Listener, type ListenerContext } from './listener.js';
import { encodeProxyV2, type ProxyHeaderInput } from './proxy-protocol.js';

/**
 * What `mtls proxy server` does the same on both engines (server-listener.ts on Node's TLS socket,
 * native-listener.ts on the native engine): the TLS options, the policy and its reload, the PROXY v2 header, and
 * how each outcome is counted and logged, so that metrics and logs do not depend on the engine.
 */
/** Client OCSP answers are believed this long; with the sweep below, a revocation closes connections within ~4 s. */
const OCSP_CACHE_MS = 3000;
const OCSP_SWEEP_MS = 1000;
/** Responder requests a sweep has in flight at most (a proxy with many distinct clients must not flood it). */
const OCSP_SWEEP_CONCURRENCY = 16;

export abstract class ServerListenerBase extends Listener<ServerListenerConfig> {
  protected policy: Policy;
  /** The CRLs in force (those of the current TLS context), and those of a context being built by a reload. */
  private crls: readonly Crl[] = [];
  private builtCrls: readonly Crl[] | undefined;
  /** Counts trust changes (bundle or CRLs): a connection accepted under an older one is checked again. */
  protected trustGeneration = 0;

  /** Fetches and refreshes our certificate's OCSP status when the listener staples (config.staple). */
  protected readonly stapler: OcspStapler | undefined;

  constructor(config: ServerListenerConfig, ctx: ListenerContext) {
    super(config, ctx);
    this.policy = compilePolicy(config.policy);
    this.stapler = config.staple
      ? new OcspStapler({
          ...(config.stapleUrl ? { url: config.stapleUrl } : {}),
          onEvent: (e) =>
            e.event === 'ocsp-staple'
              ? this.log.info(e, `OCSP status of '${e.certificate}': ${e.status} (${e.url})`)
              : this.log.warn(e, `cannot fetch the OCSP status of '${e.certificate}': ${e.reason}`),
          onStaple: (cert, der) => this.stapled(cert, der),
        })
      : undefined;
    this.reloader.on('reloaded', (e: ReloadEvent) => {
      this.crls = this.builtCrls ?? [];
      if (e.trustChanged) {
        this.trustGeneration++;
        this.closeRevokedLive();
      }
    });
  }

  /**
   * The TLS options of a (re)built context. CRLs are checked when loaded (src/tls/crl-file.ts) and never handed
   * to OpenSSL as a CRL store (with Node's `crl` option a handshake was 2.8x dearer at 100,000 entries): each
   * engine looks revocation up itself (`withRevocations`), and every admission looks again (`revocationFailure`).
   */
  protected tlsOptions(c: Credentials): ReturnType<typeof serverTlsOptions> {
    const o = serverTlsOptions(c);
    const loaded = this.config.crl ? loadCrlFile(this.config.crl, c) : undefined;
    // The first build is the one in force; later ones wait for 'reloaded' (the swap of every context).
    if (this.builtCrls === undefined) this.crls = loaded?.crls ?? [];
    this.builtCrls = loaded?.crls ?? [];
    return loaded ? this.withRevocations(o, loaded.crls) : o;
  }

  /** Asks each client certificate's OCSP responder before admission (config.clientOcsp, TCP mode). */
  private clientOcsp: OcspClientChecker | undefined;

  /**
   * Why a client that passed every other check must still be refused, by its OCSP responder: CERT_REVOKED, or
   * REVOCATION_UNKNOWN under hard-fail; undefined to admit (also when the listener does not ask).
   */
  protected async ocspFailure(chain: readonly Certificate[]): Promise<MtlsError | undefined> {
    if (!this.config.clientOcsp) return undefined;
    this.clientOcsp ??= new OcspClientChecker({
      cacheMs: OCSP_CACHE_MS,
      ...(this.config.clientOcspUrl ? { url: this.config.clientOcspUrl } : {}),
      softFail: this.config.ocspSoftFail === true,
      onEvent: (e) => {
        if (e.event !== 'ocsp-client-unknown') return;
        this.ctx.metrics.ocspUnknown.inc({ listener: this.name, result: e.admitted ? 'admitted' : 'refused' });
        if (e.admitted)
          this.log.warn(
            { event: 'ocsp-unknown-admitted', certificate: e.certificate, serial: e.serial, reason: e.reason },
            `'${e.certificate}' admitted without an OCSP status (--ocsp-soft-fail): ${e.reason}`,
          );
      },
    });
    this.ocspSweep ??= setInterval(() => void this.closeOcspRevokedLive(), OCSP_SWEEP_MS).unref();
    return this.clientOcsp.failure(chain);
  }

  private ocspSweep: NodeJS.Timeout | undefined;
  private sweeping = false;

  /**
   * With clientOcsp, each second: the certificates of the open connections are looked up again (the responder is
   * asked when the cached answer is older than OCSP_CACHE_MS, OCSP_SWEEP_CONCURRENCY at a time) and a connection
   * whose certificate is revoked now is closed, as a CRL reload does (issue 14: within 5 s, not at reconnection).
   */
  private async closeOcspRevokedLive(): Promise<void> {
    const checker = this.clientOcsp;
    if (this.sweeping || !checker || !this.config.clientOcsp) return;
    this.sweeping = true;
    try {
      const byCert = new Map<string, { certificate: Certificate; lives: { remote: string; close: () => void }[] }>();
      for (const live of this.liveConnections()) {
        const key = live.certificate.fingerprint256;
        const g = byCert.get(key) ?? byCert.set(key, { certificate: live.certificate, lives: [] }).get(key)!;
        g.lives.push(live);
      }
      const groups = [...byCert.values()];
      for (let i = 0; i < groups.length; i += OCSP_SWEEP_CONCURRENCY) {
        await Promise.all(
          groups.slice(i, i + OCSP_SWEEP_CONCURRENCY).map(async (g) => {
            const revoked = await checker.revokedNow(g.certificate);
            if (revoked) for (const live of g.lives) this.closeLive(live, g.certificate, revoked);
          }),
        );
      }
    } finally {
      this.sweeping = false;
    }
  }

  /** A new OCSP response to staple for `certificate` (null: none current); the native engine holds it itself. */
  protected stapled(_certificate: Buffer, _der: Buffer | null): void {}

  /** The engine's own revocation check during the handshake (native: a hash set in the verify callback). */
  protected withRevocations(o: ReturnType<typeof serverTlsOptions>, _crls: readonly Crl[]) {
    return o;
  }

  /**
   * Why a verified chain (leaf first) must not be admitted now: revoked by the CRLs in force at this moment, or
   * those CRLs past their nextUpdate. A reload may have replaced the CRLs since the handshake began (a connection
   * opened before it, or a session resumed from a ticket), so every admission looks, and the Node engine, which
   * has no verify callback on a server, refuses a revoked chain here.
   */
  /** Whether the certificates above `leaf` must be looked up as well (chainNeeded in tls/crl-file.ts). */
  protected revocationNeedsChain(leaf: Certificate): boolean {
    return chainNeeded(this.crls, leaf);
  }

  protected revocationFailure(chain: readonly Certificate[]): MtlsError | undefined {
    const softFail = this.config.crlSoftFail === true;
    const failure = revocationFailure(this.crls, chain, new Date(), { softFail });
    if (softFail && !failure) this.reportStaleCrl();
    return failure;
  }

  /** CRLs said stale (soft-fail): each is logged once, and every admission under it counted. */
  private readonly staleSaid = new WeakSet<Crl>();

  private reportStaleCrl(): void {
    const stale = staleCrl(this.crls);
    if (!stale) return;
    this.ctx.metrics.crlStaleAdmissions.inc({ listener: this.name });
    if (this.staleSaid.has(stale)) return;
    this.staleSaid.add(stale);
    this.log.warn(
      { event: 'crl-stale', issuer: formatDn(stale.issuer), nextUpdate: stale.nextUpdate?.toISOString() },
      `the CRL of '${formatDn(stale.issuer)}' is past its nextUpdate; admitting clients it does not list ` +
        '(--crl-soft-fail); publish a new CRL',
    );
  }

  /** The connections admitted and still open: the client certificate each was admitted with, and how to end it. */
  protected abstract liveConnections(): Iterable<{ remote: string; certificate: Certificate; close: () => void }>;

  /**
   * After a CRL (or bundle) reload, an open connection whose certificate the CRLs in force now revoke is closed
   * (issue 14): a revocation takes a stolen key out of service now, not when its holder next reconnects.
   */
  private closeRevokedLive(): void {
    for (const live of this.liveConnections()) {
      const revoked = this.revocationFailure([live.certificate]);
      if (revoked) this.closeLive(live, live.certificate, revoked);
    }
  }

  private closeLive(live: { remote: string; close: () => void }, certificate: Certificate, revoked: MtlsError): void {
    live.close();
    this.ctx.metrics.revokedClosed.inc({ listener: this.name });
    this.log.warn(
      { event: 'revoked-live', remote: live.remote, serial: certificate.serialHex, reason: revoked.message },
      `closed an open connection: ${revoked.message}`,
    );
  }

  /** Policy and limits from a reloaded config; addresses and files need a restart. */
  update(next: ServerListenerConfig): void {
    this.policy = compilePolicy(next.policy);
    this.config = {
      ...next,
      listen: this.config.listen,
      target: this.config.target,
      cert: this.config.cert,
      key: this.config.key,
      ca: this.config.ca,
      // The CRL file is watched from the start (a fetched one is the proxy's own): a new place needs a restart.
      ...(this.config.crl !== undefined ? { crl: this.config.crl } : {}),
      ...(this.config.crlUrl ? { crlUrl: this.config.crlUrl } : {}),
    };
    if (this.config.crl === undefined) delete this.config.crl;
    this.applyLimits(next.limits);
    this.log.info(
      { event: 'policy-reloaded', allow: next.policy.allow, deny: next.policy.deny ?? [] },
      'policy reloaded',
    );
  }

  protected abstract applyLimits(limits: Limits): void;

  /** The PROXY v2 header for an admitted connection, when the listener sends one. */
  protected proxyHeader(h: Omit<ProxyHeaderInput, 'includeCertificate'>): Buffer | undefined {
    return this.config.proxyProtocol
      ? encodeProxyV2({ ...h, includeCertificate: this.config.proxyProtocolCertificate })
      : undefined;
  }

  protected reportHandshake(seconds: number, resumed: boolean): void {
    this.ctx.metrics.handshakeSeconds.observe({ listener: this.name }, seconds);
    if (resumed) this.ctx.metrics.resumed.inc({ listener: this.name });
  }

  /** A TCP health check connects and closes without a byte: counted, logged only at debug. */
  protected reportProbe(remote: string): void {
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'probe', reason: 'NO_DATA' });
    this.log.debug({ event: 'probe', remote }, 'connection closed before any TLS byte (health check?)');
  }

  protected reportTimeout(remote: string): void {
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: 'HANDSHAKE_TIMEOUT' });
    this.log.warn(
      {
        event: 'handshake-failed',
        remote,
        code: 'HANDSHAKE_TIMEOUT',
        reason: `no finished handshake within ${this.config.limits.handshakeTimeoutMs} ms`,
      },
      'handshake timed out',
    );
  }

  protected reportFailure(remote: string, e: MtlsError): void {
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'failed', reason: e.code });
    this.log.warn({ event: 'handshake-failed', remote, code: e.code, reason: e.message }, 'handshake failed');
  }

  protected reportDenied(remote: string, id: PeerIdentity | undefined, reason: string): void {
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'denied', reason: 'PEER_NOT_ALLOWED' });
    this.log.info({ event: 'denied', remote, identity: id ? who(id) : null, decision: 'deny', reason }, 'denied');
  }

  protected reportAllowed(id: PeerIdentity): void {
    this.ctx.metrics.handshakes.inc({ listener: this.name, result: 'ok', reason: 'none' });
    this.ctx.metrics.perIdentity.inc({ listener: this.name, identity: this.ctx.metrics.identityLabel(who(id)) });
  }

  protected reportUnreachable(remote: string, code: string | undefined): void {
    this.log.error(
      { event: 'target-unreachable', remote, target: this.config.target, code },
      `target unreachable (${code})`,
    );
  }

  /** A relayed TCP connection ended: bytes each way and one log line with the decision it was admitted under. */
  protected reportRelayed(r: {
    remote: string;
    id: PeerIdentity;
    decision: Decision;
    resumed: boolean;
    up: number;
    down: number;
    durationMs: number;
    why: string;
  }): void {
    this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'up' }, r.up);
    this.ctx.metrics.bytes.inc({ listener: this.name, direction: 'down' }, r.down);
    this.log.info(
      {
        event: 'connection',
        remote: r.remote,
        identity: who(r.id),
        decision: r.decision.auditOnly ? 'audit' : 'allow',
        reason: r.decision.reason,
        resumed: r.resumed,
        bytesUp: r.up,
        bytesDown: r.down,
        durationMs: r.durationMs,
        closed: r.why,
      },
      'connection closed',
    );
  }
}
