import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { CertificateAuthority, type Issued } from '../src/ca/authority.js';
import { writeIssued } from '../src/ca/output.js';

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const fmt = (n: number, d = 0) =>
  n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

/** CPU seconds (user + system) used so far by a process and its children that were reaped, from /proc. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
  return ticks / 100;
}

/** CPU seconds of a process tree: the process and every live descendant (nginx master + worker). */
export function treeCpuSeconds(pid: number): number {
  let total = cpuSeconds(pid);
  for (const child of childrenOf(pid)) total += treeCpuSeconds(child);
  return total;
}

function childrenOf(pid: number): number[] {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/** `openssl speed` operations per second: 'ecdsap256' -> [sign/s, verify/s], 'ecdhx25519' -> [op/s]. */
export function opensslSpeed(alg: string, spawnSync: typeof import('node:child_process').spawnSync): number[] {
  const r = spawnSync('openssl', ['speed', '-seconds', '2', alg], { encoding: 'utf8' });
  const line =
    r.stdout
      .split('\n')
      .filter((l) => /\)\s+[\d.]+s/.test(l))
      .at(-1) ?? '';
  // After the algorithm name come the seconds per op ("0.0001s") and then the rates.
  return line
    .slice(line.lastIndexOf(')') + 1)
    .trim()
    .split(/\s+/)
    .filter((t) => /^\d+(\.\d+)?$/.test(t))
    .map(Number);
}

export async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.destroy();
        r(true);
      });
      s.on('error', () => r(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

/** Resident memory (bytes) of a process and its live descendants, from /proc. */
export function treeRss(pid: number): number {
  let total = 0;
  try {
    total = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
  } catch {
    return 0;
  }
  for (const child of childrenOf(pid)) total += treeRss(child);
  return total;
}

/** `openssl speed -evp CIPHER` bytes per second on 16 KiB blocks (a TLS record's worth): the AEAD limit of one core. */
export function opensslAeadSpeed(cipher: string, spawnSync: typeof import('node:child_process').spawnSync): number {
  const r = spawnSync('openssl', ['speed', '-evp', cipher, '-bytes', '16384', '-seconds', '2'], { encoding: 'utf8' });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  const k = /([\d.]+)k\s*$/.exec(last);
  return k ? Number(k[1]) * 1000 : NaN;
}

/**
 * A throwaway CA in a temp dir with a server certificate (localhost, 127.0.0.1) and a SPIFFE client
 * certificate written as server.crt/.key, client.crt/.key and ca.crt, and a client context for drivers.
 */
export async function benchPki(
  prefix: string,
): Promise<{ dir: string; file: (n: string) => string; client: Issued; clientContext: tls.SecureContext }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  const ca = await CertificateAuthority.init({
    home: path.join(dir, 'ca'),
    name: 'Bench',
    trustDomain: 'bench.example',
  });
  const out = (name: string) => (i: Parameters<typeof writeIssued>[0]) => {
    writeIssued(i, { outDir: dir, name, bundlePem: ca.bundlePem });
  };
  await ca.issue(
    { profile: 'server', name: 'server', names: { dns: ['localhost'], ip: ['127.0.0.1'] } },
    out('server'),
  );
  const client = await ca.issue(
    { profile: 'client', name: 'client', names: { spiffeId: 'spiffe://bench.example/ns/bench/sa/client' } },
    out('client'),
  );
  await ca.close();
  const file = (n: string) => path.join(dir, n);
  const clientContext = tls.createSecureContext({
    cert: fs.readFileSync(file('client.crt')),
    key: fs.readFileSync(file('client.key')),
    ca: fs.readFileSync(file('ca.crt')),
  });
  return { dir, file, client, clientContext };
}
