import assert from 'node:assert/strict';
import type { Command } from 'commander';
import { it } from 'node:test';
import { buildProgram } from '../../src/cli/main.js';
import { EXAMPLES } from '../../src/cli/examples.js';

function commands(c: Command, prefix = ''): [string, Command][] {
  return c.commands.flatMap((s) => {
    const key = prefix ? `${prefix} ${s.name()}` : s.name();
    return [[key, s] as [string, Command], ...commands(s, key)];
  });
}

it('every command has examples in its --help, and every flag an example uses exists on that command (issue 16)', async () => {
  const all = commands(await buildProgram());
  assert.ok(all.length >= 18);
  for (const [key, cmd] of all) {
    let help = '';
    cmd.configureOutput({ writeOut: (t) => (help += t), writeErr: (t) => (help += t) });
    cmd.outputHelp();
    assert.match(help, /Examples:/, `mtls ${key} --help has no examples`);
    const options = new Set(cmd.options.flatMap((o) => [o.long, o.short]).filter(Boolean));
    for (const line of EXAMPLES[key]!) {
      const words = line.split(/\s+/);
      if (words[0] !== 'mtls') continue;
      // The example's own command: `mtls proxy server ...` belongs to 'proxy server' even under 'proxy'.
      const target = all.find(
        ([k]) =>
          line.startsWith(`mtls ${k} `) && !all.some(([k2]) => k2.length > k.length && line.startsWith(`mtls ${k2} `)),
      );
      const own = target ? new Set(target[1].options.flatMap((o) => [o.long, o.short]).filter(Boolean)) : options;
      for (const w of words)
        if (w.startsWith('--'))
          assert.ok(own.has(w), `'${line}' uses ${w}, which mtls ${target?.[0] ?? key} does not have`);
    }
  }
});

it('sign lists only what applies to a CSR: no --key-type, no --p12 (the key stays with the requester)', async () => {
  const sign = commands(await buildProgram()).find(([k]) => k === 'sign')![1];
  const longs = sign.options.map((o) => o.long);
  assert.ok(!longs.includes('--key-type') && !longs.includes('--p12') && !longs.includes('--p12-password-file'));
  assert.ok(longs.includes('--profile') && longs.includes('--validity'));
});

it('a command run alone loads only its modules, and is the same command as in the whole CLI: options, subcommands, help', async () => {
  const shape = (c: Command): unknown => ({
    options: c.options.map((o) => o.flags),
    help: c.helpInformation(),
    subs: c.commands.map((s) => [s.name(), shape(s)]),
  });
  const all = await buildProgram();
  const names = all.commands.map((c) => c.name());
  for (const name of names) {
    const alone = await buildProgram(name);
    const mine = alone.commands.find((c) => c.name() === name);
    assert.ok(mine, `mtls ${name} is missing when run alone`);
    assert.deepEqual(
      shape(mine),
      shape(all.commands.find((c) => c.name() === name)!),
      `mtls ${name} differs when run alone`,
    );
    assert.ok(alone.commands.length < names.length, `mtls ${name} loads every command`);
  }
  assert.equal((await buildProgram('--version')).commands.length, 0);
  assert.equal((await buildProgram('no-such-command')).commands.length, names.length);
});
