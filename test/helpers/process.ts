import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type net from 'node:net';
import { after } from 'node:test';
import { close, until } from './endpoints.js';
import { BIN } from './pki.js';

const children: ChildProcess[] = [];

/**
 * Starts a long-running process (stdin kept open: openssl s_server quits on EOF) and waits until its output
 * matches `ready`. `stopAll` kills every process started here.
 */
export async function startProcess(
  cmd: string,
  args: string[],
  ready: RegExp,
  env: NodeJS.ProcessEnv = {},
): Promise<{ child: ChildProcess; output: () => string }> {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  await until(() => ready.test(out) || child.exitCode !== null, 15_000, `${cmd} to start: ${out}`);
  if (child.exitCode !== null) throw new Error(`${cmd} exited: ${out}`);
  return { child, output: () => out };
}

export function stopAll(): void {
  for (const c of children.splice(0)) c.kill('SIGTERM');
}

/** Debian installs nginx in /usr/sbin, which a non-login PATH may lack. */
export const NGINX = ['/usr/sbin/nginx', '/usr/local/sbin/nginx'].find((p) => fs.existsSync(p)) ?? 'nginx';

/** How a new Debian machine gets each real peer (the `.ci/run` installs the same). */
const INSTALL = {
  nginx: 'apt-get install nginx-light libnginx-mod-stream',
  stunnel4: 'apt-get install stunnel4',
  openssl: 'apt-get install openssl',
  curl: 'apt-get install curl',
  certutil: 'apt-get install libnss3-tools',
  'update-ca-certificates': 'apt-get install ca-certificates',
} as const;

function onPath(cmd: string): boolean {
  const dirs = [...(process.env['PATH'] ?? '').split(':'), '/usr/sbin', '/usr/local/sbin', '/sbin'];
  return dirs.some((d) => d && fs.existsSync(path.join(d, cmd)));
}

/**
 * For `{ skip: peerMissing('nginx') }`: false when the real peer is installed, else a reason that names it and the
 * command that installs it. Under CI (CI or MTLS_REQUIRE_PEERS set) a missing peer throws, so the test file fails:
 * interop is never skipped silently there.
 */
export function peerMissing(peer: keyof typeof INSTALL): string | false {
  if (onPath(peer)) return false;
  const why = `${peer} is not installed (${INSTALL[peer]})`;
  if (process.env['CI'] || process.env['MTLS_REQUIRE_PEERS']) throw new Error(`${why}: required under CI`);
  return why;
}

/** Writes an nginx.conf around `httpBody` (server blocks) in `dir`, runs nginx in the foreground, waits for its pid file. */
export async function startNginx(dir: string, httpBody: string, extra = ''): Promise<void> {
  const conf = path.join(dir, 'nginx.conf');
  fs.writeFileSync(
    conf,
    `worker_processes 1; daemon off; pid ${dir}/nginx.pid; error_log ${dir}/err.log;
events { worker_connections 1024; }
${extra}
http { access_log off; client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi; uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
${httpBody} }
`,
  );
  await startProcess(NGINX, ['-c', conf, '-e', `${dir}/err.log`], /$/);
  await until(() => fs.existsSync(`${dir}/nginx.pid`), 5000, 'nginx to write its pid');
}

/** `mtls proxy ...` as its own process; resolves once every listener logged that it listens. */
/**
 * `MODE --listen 127.0.0.1:PORT --target TARGET --cert --key --ca`, then `extra`: the arguments of `mtls proxy`
 * (what startProxy takes) for a listener with these files.
 */
export function proxyArgs(
  mode: 'server' | 'client',
  port: number | string,
  target: string,
  files: { cert: string; key: string; ca: string },
  ...extra: string[]
): string[] {
  return [mode, '--listen', `127.0.0.1:${port}`, '--target', target, ...fileArgs(files), ...extra];
}

/** `--cert FILE --key FILE [--ca FILE]`: a listener's credentials, as `mtls serve` and `mtls proxy` take them. */
function fileArgs(files: { cert: string; key: string; ca?: string }): string[] {
  return ['--cert', files.cert, '--key', files.key, ...(files.ca ? ['--ca', files.ca] : [])];
}

/** `serve --port PORT --cert --key [--ca]`, then `extra`: the arguments of `mtls serve` with these files. */
export function serveArgs(
  port: number | string,
  files: { cert: string; key: string; ca?: string },
  ...extra: string[]
): string[] {
  return ['serve', '--port', String(port), ...fileArgs(files), ...extra];
}

/** proxyArgs for a server listener that enforces `crl` and admits the crl.example trust domain (crl-pki.ts). */
export function crlProxyArgs(
  port: number | string,
  target: string,
  files: { cert: string; key: string; ca: string },
  crl: string,
  ...extra: string[]
): string[] {
  return proxyArgs('server', port, target, files, '--crl', crl, '--allow', 'trust-domain:crl.example', ...extra);
}

export function startProxy(args: string[], listeners = 1): ReturnType<typeof startProcess> {
  return startProcess(
    process.execPath,
    [BIN, 'proxy', ...args],
    new RegExp(`("event":"listening"[^\\n]*\\n[^]*){${listeners}}`),
  );
}

/**
 * The servers a test file starts (push them here): closed after the file, with every process started by
 * startProcess/startProxy; `also` runs last (e.g. closing the test CA).
 */
export function trackServers(also?: () => Promise<void> | void): net.Server[] {
  const servers: net.Server[] = [];
  after(async () => {
    stopAll();
    await Promise.all(servers.map(close));
    await also?.();
  });
  return servers;
}
