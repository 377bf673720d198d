import type { Command } from 'commander';
import { exitCodeFor, MtlsError } from '../errors.js';
import { compilePolicy } from '../identity/policy.js';
import { loadCredentials } from '../tls/credentials.js';
import { createTraceServer, type ServerTraceReport } from '../trace/listen.js';
import { renderTrace } from '../trace/render.js';
import { traceConnection } from '../trace/connect.js';
import type { TraceReport } from '../trace/trace.js';
import { MAX_INPUT, readInput, writeFileAtomic } from '../io/files.js';
import { listenOn } from '../io/listen.js';
import { useColor } from '../text/style.js';
import { collect, printJson } from './common.js';
import { caFileOr } from './common.js';
import { parseHostPort } from '../io/address.js';

interface TraceFlags {
  cert?: string;
  key?: string;
  ca?: string;
  servername?: string;
  expectSpiffeId?: string;
  revealKeys?: boolean;
  keylog?: string;
  home?: string;
  json?: boolean;
  listen?: string;
  allow: string[];
  count?: string;
  color?: string;
}

/** The --json document: the same for client and server traces (docs/trace.md). */
function traceJson(r: TraceReport | ServerTraceReport) {
  const s = r as ServerTraceReport;
  return {
    target: r.target,
    ok: r.ok,
    error: r.error ?? null,
    protocol: r.protocol ?? null,
    cipherSuite: r.cipherSuite ?? null,
    steps: r.steps,
    ...('remote' in s
      ? {
          remote: s.remote,
          identity: s.identity
            ? {
                spiffeId: s.identity.spiffeId?.uri ?? null,
                subject: s.identity.subjectDn,
                fingerprint256: s.identity.fingerprint256,
              }
            : null,
          decision: s.decision ? { allowed: s.decision.allowed, reason: s.decision.reason } : null,
        }
      : {}),
  };
}

export function registerTrace(program: Command): void {
  program
    .command('trace [hostport]')
    .description(
      'show a TLS handshake step by step, decrypted: connect to HOST:PORT, or --listen for handshakes that arrive',
    )
    .option('--cert <file>', 'our certificate chain (client; with --listen: the server certificate)')
    .option('--key <file>', 'our key')
    .option('--ca <file>', 'trusted CA bundle for the peer (default: the CA home ca.crt)')
    .option('--servername <name>', 'name to send (SNI) and check')
    .option('--expect-spiffe-id <uri>', 'check the server SPIFFE ID instead of its name')
    .option('--listen <addr>', 'be the server: trace each mTLS handshake that arrives at HOST:PORT')
    .option(
      '--allow <rule>',
      'with --listen: allow rule for clients (repeatable; default deny, the trace shows the decision)',
      collect,
      [],
    )
    .option('--count <n>', 'with --listen: stop after N handshakes')
    .option('--reveal-keys', 'print secrets and keys instead of masking them')
    .option('--keylog <file>', 'write the NSS key log (for Wireshark) to this file, mode 0600')
    .option('--color <when>', 'auto (a terminal), always or never', 'auto')
    .option('--home <dir>', 'CA home for the defaults')
    .option('--json', 'machine-readable output (one JSON document per handshake)')
    .action(async (target: string | undefined, o: TraceFlags) => {
      if ((target === undefined) === (o.listen === undefined))
        throw new MtlsError(
          'USAGE',
          'give HOST:PORT to connect to, or --listen HOST:PORT to trace handshakes that arrive (not both)',
        );
      if ((o.cert === undefined) !== (o.key === undefined))
        throw new MtlsError('USAGE', 'give both --cert and --key, or neither');
      const color = useColor(o.color);
      const caFile = caFileOr(o.ca, o.home);
      const show = (r: TraceReport, side: 'client' | 'server') => {
        if (o.json) return printJson(traceJson(r));
        for (const l of renderTrace(r, { color, side })) console.log(l);
      };
      if (o.listen !== undefined) return listen(o, caFile, (r) => show(r, 'server'));
      const { host, port } = parseHostPort(target!);
      const creds = o.cert && o.key ? loadCredentials({ certFile: o.cert, keyFile: o.key, caFile }) : undefined;
      const ca = readInput(caFile, 'CA bundle', MAX_INPUT.bundle).toString('utf8');
      const expect = {
        ...(o.servername ? { servername: o.servername } : {}),
        ...(o.expectSpiffeId ? { spiffeId: o.expectSpiffeId } : {}),
      };
      const report = await traceConnection({
        host,
        port,
        ca,
        expect,
        reveal: o.revealKeys ?? false,
        ...(creds ? { credentials: creds } : {}),
      });
      if (o.keylog) writeFileAtomic(o.keylog, report.keylog.join(''), 0o600);
      show(report, 'client');
      if (o.keylog && !o.json)
        console.log(`key log written to ${o.keylog} (0600): open it in Wireshark with a capture of this connection`);
      if (report.error) process.exitCode = exitCodeFor(report.error.code);
    });
}

async function listen(o: TraceFlags, caFile: string, show: (r: ServerTraceReport) => void): Promise<void> {
  const { host, port } = parseHostPort(o.listen!);
  if (!o.cert || !o.key)
    throw new MtlsError('USAGE', 'trace --listen needs --cert and --key: the server certificate to present');
  const count = o.count === undefined ? Infinity : Number(o.count);
  if (!(count >= 1) || (!Number.isInteger(count) && count !== Infinity))
    throw new MtlsError('USAGE', `--count '${o.count}' must be a whole number, at least 1`);
  const credentials = loadCredentials({ certFile: o.cert, keyFile: o.key, caFile });
  const keylog: string[] = [];
  let seen = 0;
  const server = createTraceServer(
    { credentials, policy: compilePolicy({ allow: o.allow }), reveal: o.revealKeys ?? false },
    (r) => {
      show(r);
      keylog.push(...r.keylog);
      if (o.keylog) writeFileAtomic(o.keylog, keylog.join(''), 0o600);
      if (++seen >= count) server.close();
    },
  );
  await listenOn(server, { host, port }, 'trace --listen');
  const addr = server.address() as { port: number };
  if (!o.json)
    console.error(
      `tracing mTLS handshakes on ${host}:${addr.port} ` +
        `(policy: ${o.allow.length ? `allow ${o.allow.join(' | ')}` : 'deny everyone; add --allow'}); Ctrl-C to stop`,
    );
  await new Promise<void>((resolve) => {
    server.on('close', resolve);
    const stop = () => server.close();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
}
