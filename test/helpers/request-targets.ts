import assert from 'node:assert/strict';
import type tls from 'node:tls';
import { tlsAttempt } from './endpoints.js';

/**
 * Spellings of a request-target against a route `/admin` that only an ops identity may use, while a wider
 * top-level rule lets the caller in elsewhere. Each says what the caller gets: 403 (the route's rule applied to
 * the normalized path), 400 (cannot be normalized safely), or 200 with the path the backend must see.
 */
export const TARGETS: { target: string; status: 200 | 400 | 403; backend?: string }[] = [
  { target: '/admin', status: 403 },
  { target: '/admin/', status: 403 },
  { target: '/admin/delete', status: 403 },
  { target: '/public/../admin', status: 403 },
  { target: '/public/%2e%2e/admin', status: 403 },
  { target: '/public/%2E%2E/admin/x', status: 403 },
  { target: '/public/.%2e/admin', status: 403 },
  { target: '//admin', status: 403 },
  { target: '///admin/x', status: 403 },
  { target: '/./admin', status: 403 },
  { target: '/%2e/admin', status: 403 },
  { target: '/%61dmin', status: 403 },
  { target: '/%61%64%6D%69%6e/x', status: 403 },
  { target: '/admin;jsessionid=1', status: 403 },
  { target: '/admin?x=1', status: 403 },
  { target: '/admin/x/..', status: 403 },
  { target: 'http://evil.example/admin', status: 403 },
  { target: 'HTTPS://evil.example//admin/x', status: 403 },
  { target: '/admin%2fx', status: 400 },
  { target: '/admin%2Fx', status: 400 },
  { target: '/public%2f..%2fadmin', status: 400 },
  { target: '/admin%5cx', status: 400 },
  { target: '/public\\..\\admin', status: 400 },
  { target: '/public/../../admin', status: 400 },
  { target: '/%00admin', status: 400 },
  { target: '/admin%00', status: 400 },
  { target: '/adm%zzin', status: 400 },
  { target: '/admin%', status: 400 },
  { target: '/public/%0a/admin', status: 400 },
  { target: '*', status: 400 },
  { target: '/public', status: 200, backend: '/public' },
  { target: '/administrator', status: 200, backend: '/administrator' },
  { target: '/public/./x/../y', status: 200, backend: '/public/y' },
  { target: '/%70ublic', status: 200, backend: '/public' },
  { target: '/public//a', status: 200, backend: '/public/a' },
  { target: '/public?q=/admin/../x', status: 200, backend: '/public?q=/admin/../x' },
  { target: '/public/%7Euser', status: 200, backend: '/public/~user' },
  { target: '/public/%c3%a9', status: 200, backend: '/public/%C3%A9' },
  { target: 'http://evil.example/public', status: 200, backend: '/public' },
];

/** Sends one raw HTTP/1.1 request (the target exactly as written) over mTLS; resolves with the status code. */
export async function rawRequest(port: number, secureContext: tls.SecureContext, target: string): Promise<number> {
  const { data } = await tlsAttempt(port, secureContext, {
    send: `GET ${target} HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n`,
  });
  const m = /^HTTP\/1\.1 (\d{3})/.exec(data);
  if (!m) throw new Error(`no HTTP answer for ${target}: ${JSON.stringify(data.slice(0, 200))}`);
  return Number(m[1]);
}

/**
 * Runs the table as the caller `ctx` (not an ops identity) against a server on `port` whose backend records the
 * paths it sees in `seen`: the status matches, a 200 reached the backend with exactly the expected path, and
 * nothing under /admin ever reached it.
 */
export async function checkTargets(port: number, ctx: tls.SecureContext, seen: string[]): Promise<void> {
  const wrong: string[] = [];
  for (const t of TARGETS) {
    seen.length = 0;
    const status = await rawRequest(port, ctx, t.target);
    const saw = seen.join(' ');
    if (status !== t.status || saw !== (t.backend ?? ''))
      wrong.push(
        `${t.target}: got ${status} (backend saw '${saw}'), want ${t.status}${t.backend ? ` '${t.backend}'` : ''}`,
      );
    if (seen.some((p) => /^\/admin(\/|;|\?|$)/.test(p))) wrong.push(`${t.target}: the backend saw ${saw}`);
  }
  assert.deepEqual(wrong, []);
}
