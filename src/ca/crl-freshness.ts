import fs from 'node:fs';
import { messageOf } from '../errors.js';
import { MAX_INPUT, withIdentifiedFile } from '../io/files.js';
import type { Certificate } from '../pki/certificate.js';
import { crlValidity } from '../pki/crl-writer.js';
import { DAY } from './init.js';
import { CRL_LIFETIME_MS, crlPaths } from './revocation.js';

/** What keeping the CRLs fresh needs of the CA (CertificateAuthority provides it). */
export interface CrlPublisher {
  readonly home: string;
  /** The CA whose CRL it publishes: a CRL it did not sign is replaced, never taken as a model. */
  readonly intermediate: Certificate;
  publishCrl(opts?: { lifetimeMs?: number }): Promise<string>;
  /** What the root's CRL needs of its operator (its key is often offline), said once per cause. */
  rootCrlNotice?(): string | undefined;
}

export interface CrlFreshnessEvents {
  /** A publication, in one line. */
  onPublish?: (message: string) => void;
  /** A failure, in one line: once per cause, tried again at the next look. */
  onError: (message: string) => void;
}

const MIN_LOOK_MS = 250;
const MAX_LOOK_MS = 60_000;

/**
 * Keeps the published CRLs of `ca` fresh while a CA process runs (`mtls ca ocsp`, `mtls ca serve`): publishes at
 * once when none is published (or the published one does not parse, or the CA did not sign it), and again once
 * half of the published CRL's lifetime has passed, with the same lifetime (one that `mtls ca crl --next-update 7d`
 * published is renewed after 3.5 days, for 7 more). Without it, a CA whose cron job is missing leaves every
 * hard-fail server refusing every client at the CRL's nextUpdate. Looks every tenth of the lifetime (between 250 ms
 * and a minute; 5 s after a failure), and reads the CRL again only when the file changed. Returns `stop`, which
 * resolves once a publication under way has ended (close the CA after it).
 */
export function keepCrlsFresh(ca: CrlPublisher, events: CrlFreshnessEvents): () => Promise<void> {
  const file = crlPaths(ca.home).intermediate;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let failing: string | undefined;
  let running: Promise<void> = Promise.resolve();
  /** The published CRL's validity, by the file's identity. */
  let known: { id: string; thisUpdate: number; lifetimeMs: number } | undefined;

  let noticed: string | undefined;
  const publish = async (lifetimeMs: number, why: string) => {
    await ca.publishCrl({ lifetimeMs });
    events.onPublish?.(
      `published fresh CRLs (${why}); the next is due by ${new Date(Date.now() + lifetimeMs / 2).toISOString()}`,
    );
    const notice = ca.rootCrlNotice?.();
    if (notice && notice !== noticed) events.onError(notice);
    noticed = notice;
  };
  const look = async () => {
    let waitMs = MAX_LOOK_MS;
    try {
      const current = published();
      if (current === 'none') await publish(CRL_LIFETIME_MS, 'none was published');
      else if (current === 'unreadable')
        await publish(CRL_LIFETIME_MS, 'the published one does not parse or is not signed by the intermediate');
      else {
        waitMs = Math.min(MAX_LOOK_MS, Math.max(MIN_LOOK_MS, current.lifetimeMs / 10));
        if (Date.now() >= current.thisUpdate + current.lifetimeMs / 2)
          await publish(current.lifetimeMs, 'half the lifetime of the last one had passed');
      }
      failing = undefined;
    } catch (err) {
      const why = `cannot keep the CRLs fresh: ${messageOf(err)}`;
      if (why !== failing && !stopped) events.onError(why);
      failing = why;
    }
    if (!stopped) timer = setTimeout(() => void (running = look()), waitMs).unref();
  };
  /** The intermediate's published CRL: its validity, or why there is none to go by. */
  const published = (): 'none' | 'unreadable' | { thisUpdate: number; lifetimeMs: number } => {
    try {
      return withIdentifiedFile(file, ({ fd, st, id }) => {
        if (known?.id === id) return known;
        let v: ReturnType<typeof crlValidity>;
        try {
          // The same open file as its identity: what is read is what was identified.
          if (st.size > BigInt(MAX_INPUT.crl)) return 'unreadable';
          v = crlValidity(fs.readFileSync(fd), file, ca.intermediate);
        } catch {
          return 'unreadable';
        }
        // Its lifetime is copied: only from a CRL the CA signed (one written over it could ask for 1 s CRLs).
        if (!v.signedByIssuer) return 'unreadable';
        const life = (v.nextUpdate?.getTime() ?? NaN) - v.thisUpdate.getTime();
        // A lifetime that makes no sense (none, negative, years) is not copied: the default is.
        const lifetimeMs = Number.isFinite(life) && life >= 1000 && life <= 366 * DAY ? life : CRL_LIFETIME_MS;
        return (known = { id, thisUpdate: v.thisUpdate.getTime(), lifetimeMs });
      });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'none';
      throw err;
    }
  };

  running = look();
  return async () => {
    stopped = true;
    clearTimeout(timer);
    await running;
  };
}
