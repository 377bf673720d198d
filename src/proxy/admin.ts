import http from 'node:http';
import type { Readiness } from './runtime.js';

export interface AdminSources {
  metrics: () => Promise<{ contentType: string; body: string }>;
  readiness: () => Readiness;
}

/** The admin port: /metrics (Prometheus), /healthz (the process answers), /readyz (it should get traffic). */
export function createAdminServer(src: AdminSources): http.Server {
  return http.createServer((req, res) => {
    const url = (req.url ?? '/').split('?')[0];
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, {
        'content-type': type,
        'content-length': Buffer.byteLength(body),
        'cache-control': 'no-store',
      });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'GET only\n');
    if (url === '/healthz') return send(200, 'text/plain', 'ok\n');
    if (url === '/readyz') {
      const r = src.readiness();
      return send(r.ready ? 200 : 503, 'text/plain', `${r.ready ? 'ready' : 'not ready'}: ${r.reason}\n`);
    }
    if (url === '/metrics') {
      src.metrics().then(
        (m) => send(200, m.contentType, m.body),
        (err: Error) => send(500, 'text/plain', `metrics unavailable: ${err.message}\n`),
      );
      return;
    }
    send(404, 'text/plain', 'try /metrics, /healthz or /readyz\n');
  });
}
