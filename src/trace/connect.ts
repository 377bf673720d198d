import type { MtlsError } from '../errors.js';
import { classifyTlsError } from '../tls/errors.js';
import { connectMtls, type ConnectOptions } from '../tls/client.js';
import { Capture } from '../tls/capture.js';
import { chainRevocation, type ChainRevocation } from '../tls/chain-revocation.js';
import { readCertificates } from '../pki/certificate.js';
import { analyzeHandshake, closedGracefully, type HandshakeView } from './analyze.js';
import { traceSteps, type TraceOptions, type TraceReport } from './trace.js';

/** `mtls trace HOST:PORT`: connects as a client through the byte tap and tells the handshake step by step. */
export async function traceConnection(o: ConnectOptions & { reveal?: boolean }): Promise<TraceReport> {
  const capture = new Capture();
  const report: TraceReport = {
    target: `${o.host}:${o.port}`,
    ok: false,
    steps: [],
    keylog: capture.keylog,
    view: undefined as unknown as HandshakeView,
  };
  let closedError: MtlsError | undefined;
  let staple: TraceOptions['staple'];
  let revocation: ChainRevocation[] | undefined;
  try {
    const c = await connectMtls({ staple: 'request', ...o, capture, confirmMs: o.confirmMs ?? 300 });
    if (c.staple) staple = c.staple;
    else if (!c.resumed) staple = 'none';
    report.ok = true;
    report.protocol = c.socket.getProtocol() ?? undefined;
    report.cipherSuite = c.socket.getCipher().standardName;
    // Give the server a moment to send application data (e.g. a greeting), then close.
    await new Promise((r) => setTimeout(r, 100));
    c.socket.destroy();
    // Each certificate of the chain: the CAs from the CRLs they name, the leaf from its responder without a staple.
    if (!c.resumed)
      revocation = await chainRevocation(c.chain, readCertificates(Buffer.from(o.ca), 'CA bundle'), {
        ...(c.staple ? { staple: c.staple } : {}),
      });
  } catch (err) {
    const e = classifyTlsError(err, { sentOurCert: o.credentials !== undefined, peer: report.target });
    report.error = { code: e.code, message: e.message };
    closedError = e;
    if (/stapled OCSP response/.test(e.message)) staple = { refused: e.message };
  }
  report.view = analyzeHandshake(capture.clientBytes, capture.serverBytes, capture.keylog);
  if (report.error?.code === 'PEER_CLOSED_AFTER_OUR_CERT' && closedGracefully(report.view)) {
    // The server accepted us and closed with close_notify (issue 16): the trace shows the close as a step.
    const d = closedError?.details as { protocol?: string; cipher?: string } | undefined;
    delete report.error;
    report.ok = true;
    if (d?.protocol) report.protocol = d.protocol;
    if (d?.cipher) report.cipherSuite = d.cipher;
    report.closedByServer = true;
  }
  report.steps = traceSteps(report.view, {
    ...(o.ca ? { ca: o.ca } : {}),
    host: o.expect?.servername ?? o.host,
    reveal: o.reveal ?? false,
    ...(staple ? { staple } : {}),
    ...(revocation ? { revocation } : {}),
  });
  return report;
}
