import crypto from 'node:crypto';
import type { MtlsErrorCode } from '../errors.js';
import { parseCertificate, readCertificates } from '../pki/certificate.js';
import type { OcspStatus } from '../pki/ocsp-check.js';
import type { ChainRevocation } from '../tls/chain-revocation.js';
import { formatDn, hostCheck, parseNameDer } from '../pki/names.js';
import { verifyChain } from '../pki/verify.js';
import { certLabel } from '../pki/path-rules.js';
import { finishedVerifyData, messageHash, transcriptHash } from '../tls13/key-schedule.js';
import {
  ExtensionType,
  HandshakeType,
  cipherSuiteName,
  extensionName,
  groupName,
  signatureSchemeName,
} from '../wire/enums.js';
import {
  decodeCertificate,
  decodeCertificateVerify,
  decodeClientHello,
  decodeEncryptedExtensions,
  serverKeyShare,
  type Extension,
} from '../wire/handshake.js';
import { clientOffer, decodeAlpn } from '../wire/extensions.js';
import { closedGracefully, type HandshakeView, type SeenMessage } from './analyze.js';
import { tls12KeyLines, tls13KeyLines } from './secrets.js';
import { judged, makeStep, versionName, type Judged, type Line, type TraceStep } from './step.js';

export { makeStep, type TraceStep } from './step.js';

export interface TraceReport {
  target: string;
  ok: boolean;
  error?: { code: MtlsErrorCode; message: string };
  protocol?: string;
  cipherSuite?: string;
  /** The server accepted us and then closed the connection with close_notify (not a rejection). */
  closedByServer?: boolean;
  steps: TraceStep[];
  /** NSS key log lines (secrets) of the connection; written with --keylog. */
  keylog: string[];
  view: HandshakeView;
}

function chosenAlpn(exts: Extension[]): string {
  const alpn = exts.find((e) => e.type === ExtensionType.alpn);
  return (alpn ? decodeAlpn(alpn.data)[0] : undefined) ?? '(none)';
}

/** RFC 8446 4.4.3: verifies a CertificateVerify with the certificate's key over the transcript hash. */
function checkCertificateVerify(
  side: 'server' | 'client',
  cv: { scheme: number; signature: Buffer },
  leafDer: Buffer,
  transcript: Buffer,
): { ok?: boolean; text: string } {
  const hashes: Record<number, string | null> = {
    0x0403: 'sha256',
    0x0503: 'sha384',
    0x0603: 'sha512',
    0x0804: 'sha256',
    0x0805: 'sha384',
    0x0806: 'sha512',
    0x0807: null,
  };
  if (!(cv.scheme in hashes)) return { text: `not checked (scheme ${signatureSchemeName(cv.scheme)})` };
  const content = Buffer.concat([
    Buffer.alloc(64, 0x20),
    Buffer.from(`TLS 1.3, ${side} CertificateVerify\0`, 'latin1'),
    transcript,
  ]);
  const key = parseCertificate(leafDer).publicKey!;
  const pss = cv.scheme >= 0x0804 && cv.scheme <= 0x0806;
  const ok = crypto.verify(
    hashes[cv.scheme]!,
    content,
    pss
      ? { key, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: crypto.constants.RSA_PSS_SALTLEN_DIGEST }
      : key,
    cv.signature,
  );
  return {
    ok,
    text: ok
      ? 'signature valid (checked by mtlskit over the transcript hash with the certificate key)'
      : 'SIGNATURE INVALID',
  };
}

/** Builds the numbered story of a captured TLS 1.3 handshake (TLS 1.2: the plaintext part). */
export interface TraceOptions {
  ca?: string;
  host: string;
  reveal: boolean;
  side?: 'client' | 'server';
  /** What the server stapled (client side): the checked status, none, or why our client refused it. */
  staple?: OcspStatus | 'none' | { refused: string };
  /**
   * The revocation status of each certificate of the server's chain (client side, src/tls/chain-revocation.ts):
   * shown for its CAs, and for the leaf when it stapled nothing.
   */
  revocation?: ChainRevocation[];
}

export function traceSteps(view: HandshakeView, opts: TraceOptions): TraceStep[] {
  const side = opts.side ?? 'client';
  const verdict = (parsed: ReturnType<typeof parseCertificate>[], purpose: 'server' | 'client'): Judged | undefined => {
    if (!opts.ca || !parsed[0]) return undefined;
    const name = purpose === 'server' ? hostCheck(opts.host) : {};
    const r = verifyChain(parsed[0], {
      trustAnchors: readCertificates(Buffer.from(opts.ca), 'CA bundle'),
      intermediates: parsed.slice(1),
      at: new Date(),
      purpose,
      ...name,
    });
    return judged(
      r.valid,
      r.valid
        ? `verdict: trusted, valid now, ${purpose === 'server' ? `valid for '${opts.host}'` : 'a client certificate'} ` +
            `(checked by mtlskit)`
        : `verdict: NOT valid: ${r.problems.map((p) => p.message).join('; ')}`,
    );
  };
  const steps: TraceStep[] = [];
  const step = (title: string, direction: TraceStep['direction'], lines: Line[], kind?: 'alert') =>
    steps.push(makeStep(steps.length + 1, title, direction, lines, kind));
  const cvLine = (prefix: string, r: { ok?: boolean; text: string }): Line =>
    r.ok === undefined ? prefix + r.text : judged(r.ok, prefix + r.text);
  const ch = view.clientHello;
  if (ch) {
    const offer = clientOffer(ch.extensions);
    const shares = offer.keyShareGroups;
    step('ClientHello', 'client->server', [
      `versions: ${offer.versions.map(versionName).join(', ')}`,
      `cipher suites: ${ch.cipherSuites.map(cipherSuiteName).join(', ')}`,
      `groups: ${offer.groups.map(groupName).join(', ')}`,
      `key share: ${shares ? shares.map(groupName).join(', ') || '(empty: the server picks the group)' : 'none'}`,
      `signature algorithms: ${offer.signatureAlgorithms.map(signatureSchemeName).join(', ')}`,
      `SNI: ${offer.serverName ?? '(none)'}; ALPN: ${offer.alpn.join(', ') || '(none)'}`,
    ]);
  }
  const retry = view.helloRetryRequest;
  const hellos = view.messages.filter((m) => m.type === HandshakeType.client_hello);
  if (retry) {
    const asked = serverKeyShare(retry);
    step('HelloRetryRequest: the server wants a key share on another group', 'server->client', [
      `group asked for: ${asked ? groupName(asked.group) : '(none)'}; cipher suite: ` +
        `${cipherSuiteName(retry.cipherSuite)}${retry.extensions.some((e) => e.type === ExtensionType.cookie) ? '; with a cookie the client must echo' : ''}`,
      'RFC 8446 4.1.4: the first ClientHello enters the transcript as message_hash(Hash(ClientHello1))',
    ]);
    const second = hellos[1] ? decodeClientHello(hellos[1].body) : undefined;
    if (second) {
      const ks = clientOffer(second.extensions).keyShareGroups;
      step('ClientHello again, with a new key share', 'client->server', [
        `key share: ${ks ? ks.map(groupName).join(', ') : 'none'} (a fresh ephemeral ` +
          `key); same client random; cookie ${second.extensions.some((e) => e.type === ExtensionType.cookie) ? 'echoed' : 'none'}`,
      ]);
    }
  }
  const sh = view.serverHello;
  if (!sh) return steps;
  const tls13 = sh.version === 0x0304;
  const server = view.messages.filter((m) => m.from === 'server');
  const client = view.messages.filter((m) => m.from === 'client');
  const ee = server.find((m) => m.type === HandshakeType.encrypted_extensions);
  const ks = serverKeyShare(sh);
  step('ServerHello' + (tls13 ? ', EncryptedExtensions' : ''), 'server->client', [
    `version: ${tls13 ? 'TLS 1.3' : sh.version === 0x0303 ? 'TLS 1.2' : `0x${sh.version.toString(16)}`}; ` +
      `cipher suite: ${cipherSuiteName(sh.cipherSuite)}; key exchange: ${ks ? groupName(ks.group) : 'see ServerKeyExchange'}`,
    ...(ee
      ? [
          `encrypted extensions: ${
            decodeEncryptedExtensions(ee.body)
              .map((e) => extensionName(e.type))
              .join(', ') || '(none)'
          }; ALPN chosen: ${chosenAlpn(decodeEncryptedExtensions(ee.body))}`,
        ]
      : []),
  ]);
  // Transcript in wire order: ClientHello, ServerHello, the server's flight, then the client's flight.
  // After a HelloRetryRequest: message_hash(ClientHello1), HelloRetryRequest, ClientHello2, ServerHello, ...
  const retryMsg = retry ? server.find((m) => m.type === HandshakeType.server_hello) : undefined;
  const head: SeenMessage[] =
    retryMsg && hellos[0] && hellos[1] && view.suite
      ? [
          { ...hellos[0], type: HandshakeType.message_hash, raw: messageHash(view.suite.hash, hellos[0].raw) },
          retryMsg,
          hellos[1],
        ]
      : hellos.slice(0, 1);
  const ordered: SeenMessage[] = [
    ...head,
    ...server.filter((m) => m.type !== HandshakeType.new_session_ticket && m !== retryMsg),
    ...client.filter((m) => m.type !== HandshakeType.client_hello),
  ];
  const hashUpTo = (m: SeenMessage | undefined) =>
    transcriptHash(view.suite?.hash ?? 'sha256', ...ordered.slice(0, m ? ordered.indexOf(m) : 0).map((x) => x.raw));
  const cert = server.find((m) => m.type === HandshakeType.certificate);
  const cv = server.find((m) => m.type === HandshakeType.certificate_verify);
  if (cert) {
    const chain = decodeCertificate(cert.body, tls13).certificates;
    const parsed = chain.map((d) => parseCertificate(d));
    const lines: Line[] = [`chain: ${parsed.map((c) => `'${certLabel(c)}'`).join(' <- ')}`];
    const v = side === 'client' ? verdict(parsed, 'server') : undefined;
    if (v) lines.push(v);
    const st = opts.staple;
    const [leafStatus, ...caStatuses] = opts.revocation ?? [];
    const revocationLine = (r: ChainRevocation, of: string): Line => {
      const text = `revocation${of}: ${r.status} (${r.source}${r.why ? `: ${r.why}` : ''})`;
      return r.status === 'not checked' ? text : judged(r.status === 'good', text);
    };
    if (st === 'none' && leafStatus && leafStatus.status !== 'not checked') lines.push(revocationLine(leafStatus, ''));
    else if (st === 'none') lines.push('revocation: not checked (the server stapled no OCSP response)');
    else if (st && 'refused' in st) lines.push(judged(false, `revocation: ${st.refused}`));
    else if (st)
      lines.push(
        judged(
          st.status === 'good',
          `revocation: ${st.status}${st.revokedAt ? ` since ${st.revokedAt.toISOString()} (${st.reason})` : ''} ` +
            `(OCSP response stapled by the server, signed by ${st.signedBy}, next update ${st.nextUpdate?.toISOString() ?? 'none'})`,
        ),
      );
    for (const r of caStatuses) lines.push(revocationLine(r, ` of '${certLabel(r.certificate)}'`));
    if (cv && tls13) {
      const v = decodeCertificateVerify(cv.body);
      lines.push(
        cvLine(
          `CertificateVerify: ${signatureSchemeName(v.scheme)}, `,
          checkCertificateVerify('server', v, chain[0]!, hashUpTo(cv)),
        ),
      );
    }
    step(
      `${side === 'server' ? 'Our (server) ' : "The server's "}Certificate${tls13 ? ' and CertificateVerify' : ''}`,
      'server->client',
      lines,
    );
  }
  if (view.certificateRequest) {
    const cas = view.certificateRequest.certificateAuthorities.map((dn) => {
      try {
        return formatDn(parseNameDer(dn));
      } catch {
        return '(unreadable name)';
      }
    });
    step('CertificateRequest: the server asks for a client certificate', 'server->client', [
      `signature algorithms: ${view.certificateRequest.signatureAlgorithms.map(signatureSchemeName).join(', ')}`,
      `acceptable CAs: ${cas.length ? cas.join(' | ') : '(any)'}`,
    ]);
  } else {
    step('CertificateRequest', 'server->client', ['none: the server did not ask for a client certificate']);
  }
  const sFin = server.find((m) => m.type === HandshakeType.finished);
  const cCert = client.find((m) => m.type === HandshakeType.certificate);
  const cCv = client.find((m) => m.type === HandshakeType.certificate_verify);
  const cFin = client.find((m) => m.type === HandshakeType.finished);
  const own: Line[] = [];
  if (cCert) {
    const certs = decodeCertificate(cCert.body, tls13).certificates;
    const whose = side === 'client' ? 'our' : "the client's";
    const parsed = certs.map((d) => parseCertificate(d));
    own.push(
      certs.length
        ? `${whose} Certificate: ${parsed.map((c) => `'${certLabel(c)}'`).join(' <- ')}`
        : `${whose} Certificate: empty (${side === 'client' ? 'we had none to send' : 'it sent none'})`,
    );
    const v = side === 'server' ? verdict(parsed, 'client') : undefined;
    if (v) own.push(v);
    if (cCv && certs[0] && tls13) {
      const cv2 = decodeCertificateVerify(cCv.body);
      own.push(
        cvLine(
          `${whose} CertificateVerify: ${signatureSchemeName(cv2.scheme)}, `,
          checkCertificateVerify('client', cv2, certs[0], hashUpTo(cCv)),
        ),
      );
    }
  }
  const fin = (m: SeenMessage | undefined, secret: Buffer | undefined, who: string) => {
    if (!m || !secret || !view.suite) return;
    const expected = finishedVerifyData(view.suite.hash, secret, hashUpTo(m));
    const ok = expected.equals(m.body);
    own.push(
      judged(
        ok,
        `${who} Finished: verify_data ${ok ? 'matches' : 'DOES NOT match'} HMAC(finished_key, ` +
          `transcript hash) (checked by mtlskit)`,
      ),
    );
  };
  fin(sFin, view.secrets.SERVER_HANDSHAKE_TRAFFIC_SECRET, 'server');
  fin(cFin, view.secrets.CLIENT_HANDSHAKE_TRAFFIC_SECRET, 'client');
  if (own.length)
    step(
      `${side === 'client' ? 'Our' : "The client's"} Certificate and CertificateVerify, both Finished`,
      'client->server',
      own,
    );
  if (!tls13 && view.tls12)
    step('TLS 1.2 key block and Finished (RFC 5246)', undefined, tls12KeyLines(view, server, client, opts.reveal));
  if (tls13 && view.suite)
    step('Key exchange and key schedule (RFC 8446 7.1, 7.3)', undefined, tls13KeyLines(view, ks, opts.reveal));
  for (const a of view.alerts.filter((x) => x.description !== 0)) {
    const dir = a.from === 'server' ? 'server->client' : 'client->server';
    step(
      `Alert from the ${a.from}: ${a.name}`,
      dir,
      [`${a.level === 2 ? 'fatal' : 'warning'}${a.encrypted ? ', decrypted with the key log' : ''}`],
      'alert',
    );
  }
  if (closedGracefully(view)) {
    step('close_notify from the server: it accepted us and closed the connection', 'server->client', [
      'a graceful close after the handshake (no alert): not a rejection of our certificate',
    ]);
  }
  for (const n of view.notes) step('Note', undefined, [n]);
  return steps;
}
