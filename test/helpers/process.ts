import { spawn, type ChildProcess } from 'node:child_process';
import { until } from './endpoints.js';

const children: ChildProcess[] = [];

/**
 * Starts a long-running process (stdin kept open: openssl s_server quits on EOF) and waits until its output
 * matches `ready`. `stopAll` kills every process started here.
 */
export async function startProcess(cmd: string, args: string[], ready: RegExp, env: NodeJS.ProcessEnv = {}): Promise<{ child: ChildProcess; output: () => string }> {
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
