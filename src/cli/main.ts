import { Command, CommanderError } from 'commander';
import { exitCodeOf, messageOf } from '../errors.js';
import { addExamples } from './examples.js';

/**
 * The modules behind the top-level commands, in the order `mtls --help` lists them, each loaded only when a command
 * it defines is run: loading all of them took ~0.4 s of every command's start (`mtls --version` took 0.5 s, of
 * which Node itself 0.1 s), as each pulls in its own stack (the CA, TLS, the proxy, fastify, undici).
 * `ca` is the parent of commands from three modules.
 */
const PARTS: { names: readonly string[]; register: (program: Command, ca: () => Command) => Promise<void> }[] = [
  { names: ['ca'], register: async (_, ca) => (await import('./ca.js')).registerCa(ca()) },
  {
    names: ['issue', 'sign', 'renew'],
    register: async (p) => {
      const m = await import('./issue.js');
      m.registerIssue(p);
      m.registerSign(p);
      m.registerRenew(p);
    },
  },
  { names: ['revoke', 'ca'], register: async (p, ca) => (await import('./revoke.js')).registerRevoke(p, ca()) },
  { names: ['agent', 'ca'], register: async (p, ca) => (await import('./ca-service.js')).registerCaService(p, ca()) },
  { names: ['inspect'], register: async (p) => (await import('./inspect.js')).registerInspect(p) },
  { names: ['verify'], register: async (p) => (await import('./verify.js')).registerVerify(p) },
  { names: ['serve'], register: async (p) => (await import('./serve.js')).registerServe(p) },
  { names: ['connect'], register: async (p) => (await import('./connect.js')).registerConnect(p) },
  { names: ['trace'], register: async (p) => (await import('./trace.js')).registerTrace(p) },
  { names: ['doctor'], register: async (p) => (await import('./doctor.js')).registerDoctor(p) },
  { names: ['proxy'], register: async (p) => (await import('./proxy.js')).registerProxy(p) },
  { names: ['demo'], register: async (p) => (await import('./demo.js')).registerDemo(p) },
];

/**
 * The CLI's commands: all of them, or with `command` (the first argument) only what that command needs. Help,
 * suggestions for a mistyped command and `mtls help X` get all of them; the version none.
 */
export async function buildProgram(command?: string): Promise<Command> {
  const program = new Command('mtls')
    .description('mtlskit: a certificate authority and tools for mutual TLS')
    .version('0.1.0')
    .showSuggestionAfterError()
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `mtls: ${s}` : s) });
  // '' loads none: the version needs no command.
  const only =
    command === '-V' || command === '--version'
      ? ''
      : PARTS.some((p) => p.names.includes(command ?? ''))
        ? command
        : undefined;
  let caCommand: Command | undefined;
  const ca = () => (caCommand ??= program.command('ca').description('create and manage the certificate authority'));
  for (const part of PARTS) if (only === undefined || part.names.includes(only)) await part.register(program, ca);
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
    await (await buildProgram(argv[0])).parseAsync(argv, { from: 'user' });
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
