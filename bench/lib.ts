import fs from 'node:fs';

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
export const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });

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
  const line = r.stdout.split('\n').filter((l) => /\)\s+[\d.]+s/.test(l)).at(-1) ?? '';
  // After the algorithm name come the seconds per op ("0.0001s") and then the rates.
  return line.slice(line.lastIndexOf(')') + 1).trim().split(/\s+/).filter((t) => /^\d+(\.\d+)?$/.test(t)).map(Number);
}
