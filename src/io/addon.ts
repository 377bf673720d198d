import { createRequire } from 'node:module';

/**
 * The native addon (build/Release/mtls_relay.node, built by `npm ci` with node-gyp against Node's own headers and
 * OpenSSL). One module, two users: the proxy's relay engine (src/proxy/native.ts declares its part) and the OCSP
 * answer server of `mtls ca ocsp` (declared here, native/answers.cc).
 */
let addon: unknown;
let loadError = '';

/** The addon's exports, typed as the caller declares them; null when it was not built or does not load. */
export function loadAddon<T>(): T | null {
  if (addon === undefined) {
    try {
      const require = createRequire(import.meta.url);
      addon = require(new URL('../../../build/Release/mtls_relay.node', import.meta.url).pathname);
    } catch (err) {
      loadError = (err as Error).message.split('\n')[0] ?? String(err);
      addon = null;
    }
  }
  return addon as T | null;
}

/** Why the addon is not there (undefined when it is), in words that say how to get it. */
export function addonUnavailable(): string | undefined {
  return loadAddon()
    ? undefined
    : `the native engine is not built (${loadError}); run npm ci (it needs make and g++), or use --engine node`;
}

/** The OCSP answer server (native/answers.cc; src/ca/ocsp-server.ts drives it). */
export interface AnswersBinding {
  /** Listens on an IP address and port (0: any), or with port -1 on the unix socket `host`: [server, bound port]. */
  answersListen(
    onRequest: (r: { id: number; method: string; url: string; ifNoneMatch: string; body: Buffer }) => void,
    host: string,
    port: number,
    markerPath: string,
  ): [unknown, number];
  answersReply(
    server: unknown,
    id: number,
    head: string,
    body: Buffer,
    cacheMs: number,
    parts: Buffer[] | null,
    gen: number,
  ): void;
  answersSigner(server: unknown, pkcs8: Buffer, algorithm: Buffer, hash: string, gen: number): void;
  answersInvalidate(server: unknown): void;
  answersStats(server: unknown): { hits: number; misses: number; refused: number };
  answersClose(server: unknown): void;
}
