import type { Logger } from 'pino';
import { crlFileFromUrls } from '../tls/crl-fetch.js';
import type { ProxyConfig } from './config.js';

/**
 * Fetches the CRLs of every server listener with `crlUrl` (issue 14) into a private file each (0700 directory,
 * rewritten atomically when they change), and returns the config with `crl` naming those files: the listeners
 * then watch and enforce them exactly as a local `crl`. Rejects when a first fetch fails (the proxy must not start
 * without the revocations it was told to enforce). `close()` stops the fetchers and removes the files.
 */
export async function fetchListenerCrls(
  config: ProxyConfig,
  log: Logger,
): Promise<{ config: ProxyConfig; close: () => void }> {
  const closers: (() => void)[] = [];
  const close = () => closers.forEach((c) => c());
  try {
    const listeners = [];
    for (const l of config.listeners) {
      if (l.mode !== 'server' || !l.crlUrl?.length) {
        listeners.push(l);
        continue;
      }
      let started = false; // a failure of the first fetch is the start-up error, not a warning
      const fetched = await crlFileFromUrls(l.crlUrl, {
        ...(l.crlRefreshMs ? { intervalMs: l.crlRefreshMs } : {}),
        onEvent: (e) => {
          if (started && e.event === 'crl-fetch-failed')
            log.warn(
              { ...e, listener: l.name },
              `cannot fetch the CRL at ${e.url}: ${e.reason}; the CRLs in force stay`,
            );
        },
      });
      started = true;
      closers.push(fetched.close);
      listeners.push({ ...l, crl: fetched.file });
    }
    return { config: { ...config, listeners }, close };
  } catch (err) {
    close();
    throw err;
  }
}
