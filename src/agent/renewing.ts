import { messageOf } from '../errors.js';
import { loadCredentials, type Credentials } from '../tls/credentials.js';
import { CredentialHolder } from '../tls/reload.js';
import { Agent, MemoryKeeper, type AgentOptions, type AgentState } from './agent.js';

export interface RenewingOptions {
  /** https://host:port of `mtls ca serve`. */
  caUrl: string;
  /** PEM of the CA's root bundle (e.g. from `mtls ca bootstrap`): the trust of these credentials. */
  root: string;
  /** A one-time enrollment token (`mtls ca token`); or `credentials` to renew. */
  token?: string;
  /** A current certificate of this CA to renew with (its trust bundle is replaced by `root`). */
  credentials?: Credentials;
  /** The CN of the certificate requested; default the token's subject, else the CN of `credentials`. */
  name?: string;
  /** Where in the lifetime to renew (default 2/3). */
  renewAt?: number;
  /** Longest wait between attempts while the CA is unreachable. Default 5 minutes. */
  maxBackoffMs?: number;
  log?: (event: Record<string, unknown>) => void;
}

/**
 * Credentials that renew themselves from `mtls ca serve` and live only in this process: the key is made here, kept
 * in memory and never written. Give it wherever mtlskit takes `credentials` (createMtlsServer,
 * createMtlsHttpsServer, connectMtls, MtlsHttpsAgent, mtlsUndiciAgent) or attach servers yourself: each renewal swaps
 * their secure context (ticket keys kept), and clients present the new certificate on their next connection.
 *
 * `await RenewingCredentials.start(o)` enrolls (or renews `o.credentials` when due) and rejects when the CA refuses;
 * then an agent renews at about 2/3 of the lifetime, retrying with capped back-off while the CA is down.
 * Events: 'reloaded' (ReloadEvent) after each renewal, 'retry' (Error) when an attempt failed and will be retried,
 * 'stopped' (MtlsError) when the CA refused for good (e.g. the certificate was revoked): the certificate held is
 * kept until it expires, and `status.health` tells where it stands.
 */
export class RenewingCredentials extends CredentialHolder {
  private constructor(
    creds: Credentials,
    private readonly agent: Agent,
  ) {
    super(creds);
  }

  static async start(o: RenewingOptions): Promise<RenewingCredentials> {
    let holder: RenewingCredentials | undefined;
    const log = o.log ?? (() => {});
    // Given credentials trust `root` from now on, as every renewal's will.
    const given = o.credentials && loadCredentials({ cert: o.credentials.cert, key: o.credentials.key, ca: o.root });
    const keeper = new MemoryKeeper(given ? { ...given, since: given.leaf.notBefore } : undefined, (fresh) =>
      holder?.renewed(fresh),
    );
    const options: AgentOptions = {
      caUrl: o.caUrl,
      root: o.root,
      keeper,
      unref: true,
      log: (e) => {
        log(e);
        if (e['event'] === 'retry') holder?.emit('retry', new Error(String(e['message'])));
      },
      ...(o.token !== undefined ? { token: o.token } : {}),
      ...(o.name !== undefined ? { name: o.name } : {}),
      ...(o.renewAt !== undefined ? { renewAt: o.renewAt } : {}),
      ...(o.maxBackoffMs !== undefined ? { maxBackoffMs: o.maxBackoffMs } : {}),
    };
    const agent = new Agent(options);
    await agent.cycle();
    holder = new RenewingCredentials(keeper.load()!, agent);
    const running = holder;
    agent.run().catch((err: unknown) => {
      log({ event: 'stopped', message: messageOf(err) });
      if (running.listenerCount('stopped') > 0) running.emit('stopped', err);
    });
    return holder;
  }

  /** A renewal arrived: swap every attached server; a server that cannot take it keeps the old one (logged). */
  private renewed(fresh: Credentials): void {
    try {
      this.apply(fresh);
    } catch (err) {
      this.emit('retry', new Error(`a renewed certificate could not be installed: ${messageOf(err)}`));
    }
  }

  /** Health (ok | expiring | expired), serial, notAfter, the next renewal and the last error. */
  get status(): AgentState {
    return this.agent.status;
  }

  /** Renews now (e.g. after a key compromise elsewhere); rejects as the CA does. */
  async renewNow(): Promise<void> {
    await this.agent.cycle(true);
  }

  /** Stops renewing. Servers keep the certificate they hold. */
  close(): void {
    this.agent.stop();
  }
}
