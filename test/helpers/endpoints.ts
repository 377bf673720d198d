import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { CertificateAuthority, type IssueRequest } from '../../src/ca/authority.js';
import { writeIssued } from '../../src/ca/output.js';
import { loadCredentials, type Credentials } from '../../src/tls/credentials.js';
import { tempDir } from './pki.js';

/** A throwaway CA with named credentials, in memory and on disk (for CLI tools and real peers). */
export interface TestPki {
  dir: string;
  ca: CertificateAuthority;
  bundle: string;
  creds: (name: string) => Credentials;
  file: (name: string) => string;
  issue: (req: IssueRequest) => Promise<Credentials>;
}

export async function testPki(trustDomain = 'test.example'): Promise<TestPki> {
  const dir = tempDir('mtls-pki-');
  const ca = await CertificateAuthority.init({ home: path.join(dir, 'ca'), name: 'Endpoint Test', trustDomain });
  const all = new Map<string, Credentials>();
  const issue = async (req: IssueRequest) => {
    const issued = await ca.issue(req, (i) => {
      writeIssued(i, { outDir: dir, name: req.name, bundlePem: ca.bundlePem, overwrite: true });
    });
    const c = loadCredentials({ cert: issued.chainPem, key: issued.privateKey!, ca: ca.bundlePem });
    all.set(req.name, c);
    return c;
  };
  await issue({ profile: 'server', name: 'server', names: { dns: ['localhost'], ip: ['127.0.0.1'] } });
  await issue({
    profile: 'spiffe',
    name: 'svid-server',
    names: { spiffeId: `spiffe://${trustDomain}/ns/prod/sa/api` },
  });
  await issue({
    profile: 'client',
    name: 'billing',
    names: { spiffeId: `spiffe://${trustDomain}/ns/prod/sa/billing` },
  });
  await issue({ profile: 'client', name: 'web', names: { spiffeId: `spiffe://${trustDomain}/ns/prod/sa/web` } });
  return {
    dir,
    ca,
    bundle: ca.bundlePem,
    issue,
    creds: (name) => all.get(name)!,
    file: (name) => path.join(dir, name),
  };
}

export async function listen(server: net.Server | tls.Server): Promise<number> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return (server.address() as net.AddressInfo).port;
}

/**
 * A TCP echo server on loopback (pushed to `servers`, closed with them): the target a proxy test relays to.
 * `open` holds its connections while they are open (a test can see that none outlives its client).
 */
export async function echoTarget(servers: net.Server[]): Promise<{ port: number; open: Set<net.Socket> }> {
  const open = new Set<net.Socket>();
  const backend = net.createServer((s) => {
    open.add(s);
    s.once('close', () => open.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  servers.push(backend);
  return { port: await listen(backend), open };
}

/** The kernel's range for ephemeral ports (what listen(0) and outgoing connections get). */
function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (lo && hi) return [lo, hi];
  } catch {
    // not Linux: the IANA dynamic range
  }
  return [49152, 65535];
}

/**
 * Ports are handed out one after another from a random start: two test files running in parallel (each its own
 * process) start at random places among 20,000 ports, and one file never gets the same port twice.
 */
let nextPort = -1;

async function canListen(port: number): Promise<boolean> {
  const s = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (ok) await new Promise((r) => s.close(r));
  return ok;
}

/**
 * A port that is free now, for another process to listen on later. Taken below the kernel's ephemeral range: a
 * port the kernel hands out (listen(0)) can go to an outgoing connection of a test running in parallel before
 * the other process binds it, which made the proxy tests fail with EADDRINUSE.
 */
export async function freePort(): Promise<number> {
  const [lo] = ephemeralRange();
  const from = Math.max(10_000, lo - 20_000);
  const span = Math.max(1, lo - from);
  if (nextPort < 0) nextPort = crypto.randomInt(span);
  for (let i = 0; i < 200; i++) {
    const port = from + (nextPort++ % span);
    if (await canListen(port)) return port;
  }
  throw new Error(`no free port found in ${from}-${lo - 1}`);
}

export function close(server: net.Server): Promise<void> {
  return new Promise((r) => {
    server.close(() => r());
    (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
  });
}

/** Waits until `pred` holds or fails after `ms`. */
export async function until(pred: () => boolean, ms = 5000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!pred()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export function writeFile(p: string, data: string): void {
  fs.writeFileSync(p, data);
}

/** What one mTLS connection through a server got: its data, whether it resumed, the last session ticket. */
export interface TlsAttempt {
  data: string;
  resumed: boolean;
  session?: Buffer;
}

/**
 * One mTLS connection to 127.0.0.1:`port` (or over `socket`, a TCP connection opened earlier), optionally resuming
 * `session` and writing `send` once secure; resolves when it closes, with everything it got.
 */
export function tlsAttempt(
  port: number,
  secureContext: tls.SecureContext,
  o: { socket?: net.Socket; session?: Buffer; send?: string } = {},
): Promise<TlsAttempt> {
  return new Promise((resolve) => {
    const c = tls.connect(
      {
        ...(o.socket ? { socket: o.socket } : { host: '127.0.0.1', port }),
        secureContext,
        servername: 'localhost',
        ...(o.session ? { session: o.session } : {}),
      },
      () => {
        if (o.send) c.write(o.send);
      },
    );
    let data = '';
    let session: Buffer | undefined;
    let resumed = false;
    c.on('secureConnect', () => {
      resumed = c.isSessionReused();
    });
    c.on('session', (s: Buffer) => {
      session = s;
    });
    c.on('data', (d) => (data += d));
    c.on('error', () => undefined);
    c.on('close', () => resolve({ data, resumed, ...(session ? { session } : {}) }));
  });
}

/** `--cert NAME.crt --key NAME.key --ca ca.crt` of a test PKI, as the CLI takes them. */
export function credentialArgs(pki: { file: (name: string) => string }, name = 'server'): string[] {
  return ['--cert', pki.file(`${name}.crt`), '--key', pki.file(`${name}.key`), '--ca', pki.file('ca.crt')];
}
