import fs from 'node:fs';
import type { Command } from 'commander';
import { exitCodeOf, MtlsError } from '../errors.js';
import { loadCredentials } from '../tls/credentials.js';
import { traceConnection } from '../trace/trace.js';
import { writeFileAtomic } from '../util/fs.js';
import { printJson } from './common.js';
import { caFileOr, parseHostPort } from './endpoints.js';

const ARROW = { 'client->server': 'client ──▶ server', 'server->client': 'client ◀── server' } as const;

export function registerTrace(program: Command): void {
  program.command('trace <hostport>')
    .description('connect and show the TLS handshake step by step, decrypted (TLS 1.3 via the key log)')
    .option('--cert <file>', 'our client certificate chain')
    .option('--key <file>', 'our key')
    .option('--ca <file>', 'trusted CA bundle for the server (default: the CA home ca.crt)')
    .option('--servername <name>', 'name to send (SNI) and check')
    .option('--expect-spiffe-id <uri>', 'check the server SPIFFE ID instead of its name')
    .option('--reveal-keys', 'print secrets and keys instead of masking them')
    .option('--keylog <file>', 'write the NSS key log (for Wireshark) to this file, mode 0600')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--json', 'machine-readable output')
    .action(async (target: string, o: { cert?: string; key?: string; ca?: string; servername?: string; expectSpiffeId?: string; revealKeys?: boolean; keylog?: string; home?: string; json?: boolean }) => {
      const { host, port } = parseHostPort(target);
      if ((o.cert === undefined) !== (o.key === undefined)) throw new MtlsError('USAGE', 'give both --cert and --key, or neither');
      const caFile = caFileOr(o.ca, o.home);
      const creds = o.cert && o.key ? loadCredentials({ certFile: o.cert, keyFile: o.key, caFile }) : undefined;
      const ca = fs.readFileSync(caFile, 'utf8');
      const expect = { ...(o.servername ? { servername: o.servername } : {}), ...(o.expectSpiffeId ? { spiffeId: o.expectSpiffeId } : {}) };
      const report = await traceConnection({ host, port, ca, expect, reveal: o.revealKeys ?? false, ...(creds ? { credentials: creds } : {}) });
      if (o.keylog) writeFileAtomic(o.keylog, report.keylog.join(''), 0o600);
      if (o.json) {
        printJson({ target: report.target, ok: report.ok, error: report.error ?? null, protocol: report.protocol ?? null, cipherSuite: report.cipherSuite ?? null, steps: report.steps });
      } else {
        for (const s of report.steps) {
          console.log(`${String(s.n).padStart(2)}. ${s.title}${s.direction ? `   [${ARROW[s.direction]}]` : ''}`);
          for (const l of s.lines) console.log(`      ${l}`);
        }
        console.log(report.ok ? `=> mutual TLS established (${report.protocol}, ${report.cipherSuite})` : `=> failed: [${report.error!.code}] ${report.error!.message}`);
        if (o.keylog) console.log(`key log written to ${o.keylog} (0600): open it in Wireshark with a capture of this connection`);
      }
      if (!report.ok) process.exitCode = exitCodeOf(new MtlsError(report.error!.code as never, report.error!.message));
    });
}
