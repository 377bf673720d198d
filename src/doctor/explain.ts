import { messageOf } from '../errors.js';
import type { Certificate } from '../pki/certificate.js';
import { formatDn, hostCheck, parseNameDer } from '../pki/names.js';
import { verifyChain } from '../pki/verify.js';
import type { Capture } from '../tls/capture.js';
import { dial } from '../tls/dial.js';
import { SECURE_CIPHERS, SECURE_GROUPS } from '../tls/options.js';
import { analyzeHandshake, closedGracefully } from '../trace/analyze.js';
import { signatureSchemeName } from '../wire/enums.js';

/** What the server asked of a client, read from a captured handshake. */
export interface RequestExplained {
  /** 'asked': a CertificateRequest was seen; 'not asked': the handshake was read and had none; 'unknown': unread. */
  certificate: 'asked' | 'not asked' | 'unknown';
  /** Its signature algorithms and acceptable CAs (distinguished names), when asked. */
  signatureAlgorithms: string[];
  acceptableCas: string[];
  /** Why the encrypted flight could not be read, when it could not. */
  notes: string[];
  /** The alerts the server sent (close_notify left out), and whether they were decrypted. */
  alerts: string[];
  decrypted: boolean;
  /** The server closed with close_notify and no alert (it accepted us, then closed): see closedGracefully. */
  closedGracefully: boolean;
}

/** Reads the CertificateRequest and the server's alerts out of a capture (connect uses it to say what happened). */
export function explainRequest(capture: Capture): RequestExplained {
  const view = analyzeHandshake(capture.clientBytes, capture.serverBytes, capture.keylog);
  const req = view.certificateRequest;
  const cas = (req?.certificateAuthorities ?? []).map((dn) => {
    try {
      return formatDn(parseNameDer(dn));
    } catch {
      return '(unreadable name)';
    }
  });
  return {
    certificate: req ? 'asked' : view.serverHello && view.notes.length === 0 ? 'not asked' : 'unknown',
    signatureAlgorithms: (req?.signatureAlgorithms ?? []).map(signatureSchemeName),
    acceptableCas: cas,
    notes: view.serverHello ? view.notes : [],
    alerts: view.serverAlerts.filter((a) => a.description !== 0).map((a) => a.name),
    decrypted: view.serverHello?.version === 0x0304,
    closedGracefully: closedGracefully(view),
  };
}

/**
 * After a failed verification: fetches the server's chain without verifying it, only to say what is wrong with
 * it (one sentence per problem of our own path validation).
 */
export async function explainServerChain(o: {
  host: string;
  port: number;
  trust: Certificate[];
  servername?: string;
  spiffeId?: string;
  timeoutMs?: number;
}): Promise<string[]> {
  try {
    const d = await dial({
      host: o.host,
      port: o.port,
      verify: 'observe',
      timeoutMs: o.timeoutMs ?? 5000,
      ...(o.servername ? { servername: o.servername } : {}),
      tls: { ciphers: SECURE_CIPHERS, ecdhCurve: SECURE_GROUPS },
    });
    d.socket.destroy();
    if (d.chain.length === 0) return ['the server sent no certificate'];
    const r = verifyChain(d.chain[0]!, {
      trustAnchors: o.trust,
      intermediates: d.chain.slice(1),
      at: new Date(),
      purpose: 'server',
      ...(o.spiffeId ? { spiffeId: o.spiffeId } : hostCheck(o.servername ?? o.host)),
    });
    return r.problems.map((p) => p.message);
  } catch (err) {
    return [`could not fetch the chain to explain it (${messageOf(err)})`];
  }
}
