import net from 'node:net';
import tls from 'node:tls';
import { identityOf, type PeerIdentity } from '../identity/identity.js';
import { compilePolicy, type Decision, type Policy } from '../identity/policy.js';
import type { Credentials } from '../tls/credentials.js';
import { authorizationFailure, classifyTlsError } from '../tls/errors.js';
import { serverTlsOptions } from '../tls/options.js';
import { analyzeHandshake } from './analyze.js';
import { Capture, tap } from '../tls/capture.js';
import { makeStep, traceSteps, type TraceReport } from './trace.js';

/** A handshake that arrived at `mtls trace --listen`, told from the server's side. */
export interface ServerTraceReport extends TraceReport {
  /** The client's address. */
  remote: string;
  identity?: PeerIdentity;
  decision?: Decision;
}

export interface TraceServerOptions {
  credentials: Credentials;
  /** Default: deny everyone (the trace still shows the handshake and the decision). */
  policy?: Policy;
  reveal?: boolean;
  /** A connection is cut this long after it arrived, whatever it does (a trace is of a handshake). Default 10 s. */
  handshakeTimeoutMs?: number;
}

/** Analyses waiting to run; past this, a connection is reported without its decoded handshake. */
const MAX_PENDING_ANALYSES = 64;

/**
 * A TCP server that terminates mTLS through a byte tap and reports every connection as a trace once it
 * closes. Each connection gets a TLS server object of its own so that the key log, the verdict and the bytes
 * are tied to it without guessing (a tracing tool, not a fast path: that costs a secure context per connection).
 */
export function createTraceServer(o: TraceServerOptions, onTrace: (r: ServerTraceReport) => void): net.Server {
  const policy = o.policy ?? compilePolicy({ allow: [] });
  const base = serverTlsOptions(o.credentials);
  const deadlineMs = o.handshakeTimeoutMs ?? 10_000;
  // Decoding and verifying a capture is CPU work a client's bytes decide: it runs off the accepting path, one
  // connection per event-loop turn, so a hostile chain delays its own report and nobody else's handshake.
  const pending: (() => void)[] = [];
  let draining = false;
  const drain = () => {
    const next = pending.shift();
    if (!next) return void (draining = false);
    next();
    setImmediate(drain);
  };
  const analyse = (job: () => void, skip: () => void) => {
    if (pending.length >= MAX_PENDING_ANALYSES) return skip();
    pending.push(job);
    if (!draining) {
      draining = true;
      setImmediate(drain);
    }
  };
  return net.createServer((raw) => {
    // Node's handshakeTimeout leaves a client that sent part of a record connected: our own deadline cuts it.
    const deadline = setTimeout(() => raw.destroy(), deadlineMs);
    raw.once('close', () => clearTimeout(deadline));
    const remote = `${raw.remoteAddress}:${raw.remotePort}`;
    const capture = new Capture();
    const report: ServerTraceReport = {
      target: remote,
      remote,
      ok: false,
      steps: [],
      keylog: capture.keylog,
      view: undefined as never,
    };
    const server = tls.createServer({ ...base, handshakeTimeout: deadlineMs });
    server.on('keylog', (line: Buffer) => capture.keylog.push(line.toString('latin1')));
    server.on('tlsClientError', (err: Error, s: tls.TLSSocket) => {
      const e = authorizationFailure(s.authorizationError) ?? classifyTlsError(err);
      report.error = { code: e.code, message: e.message };
    });
    server.on('secureConnection', (s: tls.TLSSocket) => {
      report.protocol = s.getProtocol() ?? undefined;
      report.cipherSuite = s.getCipher().standardName;
      const id = identityOf(s);
      report.decision = policy.decide(id);
      if (id) report.identity = id;
      if (!report.decision.allowed || !id) {
        report.error = { code: 'PEER_NOT_ALLOWED', message: `denied by policy: ${report.decision.reason}` };
        s.destroy();
        return;
      }
      report.ok = true;
      const who = id.spiffeId?.uri ?? id.subjectDn;
      // Answer HTTP with HTTP (curl), anything else with one line.
      s.once('data', (d: Buffer) => {
        const body = `hello ${who}: this handshake was traced by mtls trace --listen\n`;
        s.end(
          /^[A-Z]+ \S+ HTTP\/1\.[01]\r\n/.test(d.toString('latin1', 0, 64))
            ? `HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: ` +
                `close\r\n\r\n${body}`
            : body,
        );
      });
      setTimeout(() => {
        if (!s.destroyed) s.end(`hello ${who}\n`);
      }, 500).unref();
    });
    const duplex = tap(raw, capture, 'server');
    let told = false;
    const tell = () => {
      if (told) return;
      told = true;
      server.close();
      if (capture.truncated)
        report.error ??= {
          code: 'HANDSHAKE_FAILED',
          message: `the connection sent more than ${capture.limit} bytes and was cut`,
        };
      analyse(
        () => {
          report.view = analyzeHandshake(capture.clientBytes, capture.serverBytes, capture.keylog);
          report.steps = traceSteps(report.view, {
            ca: o.credentials.ca,
            host: '',
            reveal: o.reveal ?? false,
            side: 'server',
          });
          if (report.decision) {
            const d = report.decision;
            report.steps.push(
              makeStep(report.steps.length + 1, 'Authorization', undefined, [
                { ok: d.allowed, text: `${d.allowed ? 'ALLOW' : 'DENY'}: ${d.reason}` },
              ]),
            );
          }
          onTrace(report);
        },
        () => {
          report.view = analyzeHandshake(Buffer.alloc(0), Buffer.alloc(0), []);
          report.steps = [
            {
              n: 1,
              title: 'Not analysed',
              lines: [`${MAX_PENDING_ANALYSES} connections were waiting for analysis; this one was only counted`],
            },
          ];
          onTrace(report);
        },
      );
    };
    raw.on('close', tell);
    raw.on('error', () => undefined);
    server.emit('connection', duplex);
  });
}
