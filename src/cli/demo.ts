import type { Command } from 'commander';
import { runDemo } from '../demo/demo.js';

export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('a throwaway CA, a server and clients, and real mTLS handshakes explained step by step')
    .action(async () => {
      process.exitCode = await runDemo();
    });
}
