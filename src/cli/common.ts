import fs from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { caPaths, resolveCaHome } from '../ca/home.js';
import { MtlsError } from '../errors.js';
import { parseDuration } from '../text/duration.js';
import { readPassphraseFile } from '../io/files.js';

/** Commander collector for repeatable options (`--dns a --dns b`, also `--dns a,b`). */
export function collect(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v.length > 0),
  ];
}

/** The policy flags of a command that authorizes peers (`serve`, `proxy server`). */
export interface PolicyFlags {
  allow: string[];
  deny: string[];
  audit?: boolean;
}

export function policyOptions(cmd: Command): Command {
  return cmd
    .option(
      '--allow <rule>',
      'allow rule (repeatable): spiffe://td/ns/*/sa/x, trust-domain:td, dns:, dn:O=Acme, cn:, any',
      collect,
      [],
    )
    .option('--deny <rule>', 'deny rule (repeatable), checked before allow rules', collect, [])
    .option('--audit', 'log what the policy would deny, but allow it');
}

export function optionalDuration(text: string | undefined, what: string): number | undefined {
  return text === undefined ? undefined : parseDuration(text, what);
}

export function optionalPassphrase(file: string | undefined): string | undefined {
  return file === undefined ? undefined : readPassphraseFile(file);
}

/** Parses an ISO-8601 time given on the command line. */
export function parseTime(text: string, what: string): Date {
  if (!/^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$/.test(text)) {
    throw new MtlsError('BAD_INPUT', `${what} '${text}' is not an ISO-8601 time; write it like 2026-11-24T10:00Z`);
  }
  const d = new Date(text);
  if (Number.isNaN(d.getTime())) throw new MtlsError('BAD_INPUT', `${what} '${text}' is not a valid date`);
  return d;
}

export function printJson(value: unknown): void {
  process.stdout.write(
    JSON.stringify(value, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('hex') : v), 2) + '\n',
  );
}

/** --ca defaults to the CA home's trust bundle. */
export function caFileOr(ca: string | undefined, home: string | undefined): string {
  if (ca) return ca;
  const bundle = caPaths(resolveCaHome(home)).bundle;
  if (!fs.existsSync(bundle))
    throw new MtlsError(
      'USAGE',
      `no --ca given and no CA home at ${path.dirname(bundle)}; pass --ca or create a CA with 'mtls ca init'`,
    );
  return bundle;
}
