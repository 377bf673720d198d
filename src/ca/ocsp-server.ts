import dns from 'node:dns/promises';
import http from 'node:http';
import { MtlsError, messageOf } from '../errors.js';
import { formatAddress, type Address } from '../io/address.js';
import { listenOn } from '../io/listen.js';
import { ocspSignature } from '../pki/ocsp.js';
import { addonUnavailable, loadAddon, type AnswersBinding } from '../io/addon.js';
import { crlPaths } from './revocation.js';
import type { Signer } from './ocsp-signers.js';
import { revocationAnswer, revocationRoutes, type OcspResponder, type RevocationAnswer } from './ocsp-responder.js';

/** A running `mtls ca ocsp`. */
export interface OcspServer {
  /** native: answers it has given before come from a cache in the addon's thread (native/answers.cc). */
  engine: 'native' | 'node';
  /** The TCP port it listens on (0 on a unix socket). */
  port: number;
  /** Requests answered from the native cache (hits), handed to JavaScript (misses), and connections refused. */
  stats(): { hits: number; misses: number; refused: number };
  close(): Promise<void>;
}

export interface ServeOcspOptions {
  /** auto (default): native when the addon is built, else node. */
  engine?: 'auto' | 'native' | 'node';
}

const USAGE = 'POST /ocsp, GET /ocsp/<base64>, GET /crl/intermediate.crl or /crl/root.crl\n';
const notFound: RevocationAnswer = { status: 404, type: 'text/plain', body: Buffer.from(USAGE) };
const failed: RevocationAnswer = { status: 500, type: 'text/plain', body: Buffer.from('internal error\n') };

/**
 * `mtls ca ocsp`: the revocation routes (revocationAnswer), the URLs `ca init --url` puts in certificates.
 *
 * The native engine answers a request it has answered before from a cache, without entering JavaScript: an answer
 * the responder marks reusable (no nonce; every certificate good or revoked) for half its lifetime, until the next
 * revocation. The inventory's revocation mark is polled every 100 ms (and looked at at once when this home's CRL
 * files change), so a revocation by any process or replica drops every kept answer.
 * Bounded: 16 KiB requests, 10 s to send one.
 */
export async function serveOcsp(
  responder: OcspResponder,
  home: string,
  at: Address,
  onError: (m: string) => void,
  opts: ServeOcspOptions = {},
): Promise<OcspServer> {
  const engine = opts.engine ?? 'auto';
  const binding = engine === 'node' ? null : loadAddon<AnswersBinding>();
  if (engine === 'native' && !binding) throw new MtlsError('USAGE', addonUnavailable()!);
  return binding ? serveNative(binding, responder, home, at, onError) : serveNode(responder, home, at, onError);
}

async function serveNode(responder: OcspResponder, home: string, at: Address, onError: (m: string) => void) {
  const routes = revocationRoutes(responder, home, onError);
  const server = http.createServer((req, res) => {
    if (routes(req, res)) return;
    res.writeHead(404, { 'content-type': 'text/plain', 'content-length': notFound.body.length });
    res.end(notFound.body);
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  server.on('clientError', (_err, socket) => socket.destroy());
  await listenOn(server, at, 'the OCSP responder');
  const bound = server.address();
  return {
    engine: 'node' as const,
    port: typeof bound === 'object' && bound ? bound.port : 0,
    stats: () => ({ hits: 0, misses: 0, refused: 0 }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

const headOf = (a: RevocationAnswer) =>
  `HTTP/1.1 ${a.status} ${http.STATUS_CODES[a.status] ?? ''}\r\ncontent-type: ${a.type}\r\n` +
  Object.entries(a.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('');

async function serveNative(
  binding: AnswersBinding,
  responder: OcspResponder,
  home: string,
  at: Address,
  onError: (m: string) => void,
): Promise<OcspServer> {
  let host: string;
  let port: number;
  if ('path' in at) [host, port] = [at.path, -1];
  else {
    try {
      host = (await dns.lookup(at.host)).address;
    } catch {
      throw new MtlsError('USAGE', `the OCSP responder cannot listen on ${formatAddress(at)}: unknown host`);
    }
    port = at.port;
  }
  let server: unknown;
  // The keys the addon signs with, by responder certificate: each has a generation, which the parts made with it
  // carry (the addon keeps the newest 4; parts of a generation it no longer has are answered here again).
  const generations = new Map<string, number>();
  let lastGen = 0;
  const generationOf = (signer: Signer): number => {
    let gen = generations.get(signer.cert.serialHex);
    if (gen !== undefined) return gen;
    gen = ++lastGen;
    const key = signer.key.export({ type: 'pkcs8', format: 'der' });
    const { algorithm, hash } = ocspSignature(signer.key);
    try {
      binding.answersSigner(server, key, algorithm, hash ?? '', gen);
    } finally {
      key.fill(0);
    }
    generations.set(signer.cert.serialHex, gen);
    if (generations.size > 4) generations.delete(generations.keys().next().value!);
    return gen;
  };
  const reply = (id: number, a: RevocationAnswer) => {
    const o = a.ocsp;
    const reusable = o?.parts && o.signer && o.cacheMs > 0;
    const parts = reusable ? [o.parts!.responderId, o.parts!.responses, o.parts!.certs] : null;
    const gen = reusable ? generationOf(o.signer!) : 0;
    binding.answersReply(server, id, headOf(a), a.body, reusable ? Math.floor(o.cacheMs) : 0, parts, gen);
  };
  const onRequest = (r: { id: number; method: string; url: string; ifNoneMatch: string; body: Buffer }) => {
    revocationAnswer(responder, home, {
      method: r.method,
      url: r.url,
      ...(r.ifNoneMatch ? { ifNoneMatch: r.ifNoneMatch } : {}),
      ...(r.method === 'POST' ? { body: r.body } : {}),
    })
      .then((a = notFound) => reply(r.id, a))
      .catch((err) => {
        onError(messageOf(err));
        reply(r.id, failed);
      });
  };
  let bound: number;
  try {
    [server, bound] = binding.answersListen(onRequest, host, port, crlPaths(home).revoked);
  } catch (err) {
    const code = messageOf(err).split(':')[0];
    throw new MtlsError(
      'IO',
      `the OCSP responder cannot listen on ${formatAddress(at)} (${code}); choose another address`,
    );
  }
  const unwatch = responder.watchRevocations(() => binding.answersInvalidate(server), onError);
  return {
    engine: 'native',
    port: bound,
    stats: () => binding.answersStats(server),
    close: async () => {
      unwatch();
      binding.answersClose(server);
    },
  };
}
