import type { Command } from 'commander';
import { doctor, doctorExitCode, type DoctorReport } from '../doctor/doctor.js';
import { MtlsError } from '../errors.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { printJson } from './common.js';
import { caFileOr } from './common.js';
import { parseHostPort } from '../io/address.js';
import { paint, useColor } from '../text/style.js';

interface DoctorFlags {
  cert?: string;
  key?: string;
  ca?: string;
  servername?: string;
  expectSpiffeId?: string;
  http: boolean;
  home?: string;
  json?: boolean;
  timeout: string;
  color?: string;
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor <hostport>')
    .description('find out why an mTLS connection fails, and how to fix it')
    .option('--cert <file>', 'our client certificate chain')
    .option('--key <file>', 'our key')
    .option('--ca <file>', 'trusted CA bundle for the server (default: the CA home ca.crt)')
    .option('--servername <name>', 'name to send (SNI) and check')
    .option('--expect-spiffe-id <uri>', 'check the server SPIFFE ID instead of its name')
    .option('--no-http', 'do not send HEAD / after the handshake (it reads the server clock from the Date header)')
    .option('--timeout <ms>', 'connection deadline in milliseconds', '5000')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--color <when>', 'auto, always or never', 'auto')
    .option('--json', 'machine-readable output')
    .action(async (target: string, o: DoctorFlags) => {
      const { host, port } = parseHostPort(target);
      if ((o.cert === undefined) !== (o.key === undefined))
        throw new MtlsError('USAGE', 'give both --cert and --key, or neither');
      const timeoutMs = Number(o.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs < 100)
        throw new MtlsError('USAGE', `--timeout '${o.timeout}' must be a whole number of milliseconds, at least 100`);
      const report = await doctor({
        host,
        port,
        ca: readInput(caFileOr(o.ca, o.home), 'CA bundle', MAX_INPUT.bundle),
        timeoutMs,
        http: o.http,
        ...(o.cert && o.key
          ? { cert: readInput(o.cert, 'certificate'), certFile: o.cert, key: readInput(o.key, 'key') }
          : {}),
        ...(o.servername ? { servername: o.servername } : {}),
        ...(o.expectSpiffeId ? { spiffeId: o.expectSpiffeId } : {}),
      });
      if (o.json) printJson(report);
      else printReport(report, useColor(o.color));
      process.exitCode = doctorExitCode(report.diagnosis.code);
    });
}

function printReport(r: DoctorReport, color: boolean): void {
  const c = paint(color);
  console.log(c.bold(`mtls doctor ${r.target}`));
  for (const k of r.checks) {
    const mark = k.ok === true ? c.green('✓') : k.ok === false ? c.red('✗') : c.dim('·');
    console.log(`  ${mark} ${k.name}${k.detail ? c.dim(`: ${k.detail}`) : ''}`);
  }
  const d = r.diagnosis;
  console.log(`${r.ok ? c.green('healthy') : c.red(`diagnosis: ${d.code}`)}: ${d.cause}`);
  if (!r.ok) console.log(`${c.bold('fix')}: ${d.fix}`);
}
