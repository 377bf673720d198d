import type { IncomingMessage } from 'node:http';
import type { Policy } from '../identity/policy.js';
import { authorizeRequest, type RequestMtls } from './http.js';

/** The parts of Fastify the plugin uses (kept structural so Fastify stays an optional peer). */
interface FastifyLike {
  decorateRequest(name: string, value: unknown): void;
  addHook(
    name: 'onRequest',
    fn: (req: { raw: IncomingMessage; mtls?: RequestMtls }, reply: ReplyLike, done: () => void) => void,
  ): void;
}
interface ReplyLike {
  code(n: number): ReplyLike;
  send(body: unknown): unknown;
}

/**
 * Fastify plugin: `app.register(mtlsFastify, { policy })`. Sets `request.mtls` ({ identity, decision }) and
 * answers 403 with the reason when the policy denies. Registered without encapsulation, so it covers every route.
 * Fastify has routed a request before its onRequest hook runs, so a request target that is not already in
 * normalized form (`/a/../b`, `//b`, `%62`) is answered 400: the route Fastify chose could differ from the path
 * the policy decided on.
 */
export function mtlsFastify(app: FastifyLike, opts: { policy: Policy }, done: (err?: Error) => void): void {
  app.decorateRequest('mtls', null);
  app.addHook('onRequest', (req, reply, next) => {
    const raw = req.raw.url;
    const m = authorizeRequest(opts.policy, req.raw);
    req.mtls = m;
    if (!m.badTarget && m.target !== raw) {
      reply.code(400).send({ error: 'bad request', reason: `bad request target: send it normalized, as ${m.target}` });
      return;
    }
    if (!m.decision.allowed) {
      reply
        .code(m.badTarget ? 400 : 403)
        .send({ error: m.badTarget ? 'bad request' : 'forbidden', reason: m.decision.reason });
      return;
    }
    next();
  });
  done();
}
(mtlsFastify as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true;
