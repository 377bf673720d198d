import { Command, CommanderError } from 'commander';
import { exitCodeOf, messageOf } from '../errors.js';
import { registerCa } from './ca.js';
import { registerDemo } from './demo.js';
import { registerDoctor } from './doctor.js';
import { registerProxy } from './proxy.js';
import { registerConnect } from './connect.js';
import { registerServe } from './serve.js';
import { registerInspect } from './inspect.js';
import { registerIssue, registerRenew, registerSign } from './issue.js';
import { registerVerify } from './verify.js';
import { registerRevoke } from './revoke.js';
import { registerCaService } from './ca-service.js';
import { registerTrace } from './trace.js';
import { addExamples } from './examples.js';

export function buildProgram(): Command {
  const program = new Command('mtls')
    .description('mtlskit: a certificate authority and tools for mutual TLS')
    .version('0.1.0')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `mtls: ${s}` : s) });
  const ca = registerCa(program);
  registerIssue(program);
  registerSign(program);
  registerRenew(program);
  registerRevoke(program, ca);
  registerCaService(program, ca);
  registerInspect(program);
  registerVerify(program);
  registerServe(program);
  registerConnect(program);
  registerTrace(program);
  registerDoctor(program);
  registerProxy(program);
  registerDemo(program);
  addExamples(program);
  for (const c of allCommands(program)) c.exitOverride();
  return program;
}

function allCommands(c: Command): Command[] {
  return c.commands.flatMap((x) => [x, ...allCommands(x)]);
}

/** Runs the CLI: one line on stderr for any error, exit 2 for unusable input, 1 for refusals and failures. */
export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv, { from: 'user' });
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
        return 0;
      return 2;
    }
    process.stderr.write(`mtls: error: ${messageOf(err)}\n`);
    if (process.env['MTLS_DEBUG'] && err instanceof Error) process.stderr.write(`${err.stack}\n`);
    return exitCodeOf(err);
  }
}
