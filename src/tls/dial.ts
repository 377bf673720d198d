import net from 'node:net';
import tls from 'node:tls';
import { parseCertificate, type Certificate } from '../pki/certificate.js';
import { isIpLiteral } from '../pki/names.js';
import { tap, type Capture } from './capture.js';

/**
 * The one client dialer of mtlskit (as undici's lib/core/connect.js and ghostunnel's socket/net.go are theirs):
 * every outgoing TLS connection (connect, trace, doctor, explaining a chain) opens here, with one deadline, one
 * settle-once, one clean-up, SNI, the byte tap and the key log.
 */
export interface DialOptions {
  host: string;
  port: number;
  /**
   * The name sent as SNI. Default: the host, unless it is an IP literal (RFC 6066 3: SNI carries host names only),
   * so that a server that picks its certificate by SNI shows us the one curl sees.
   */
  servername?: string;
  /**
   * 'strict': Node verifies the chain against `tls.ca` and calls `tls.checkServerIdentity`; a failure rejects.
   * 'observe': nothing is verified here; the caller judges the chain (doctor, trace, explaining a failure).
   */
  verify: 'strict' | 'observe';
  /** The rest of the TLS options: ca, cert, key, ciphers, groups, versions, session. */
  tls: tls.ConnectionOptions & { requestOCSP?: boolean };
  /** Connect + handshake (+ confirm) deadline. */
  timeoutMs: number;
  /**
   * TLS 1.3 completes on our side before the server has judged our certificate: wait this long for its verdict
   * (an alert or a close) before resolving. Default 0.
   */
  confirmMs?: number;
  /** Record every byte both ways and the key log. */
  capture?: Capture;
  /**
   * Called at secureConnect with the server's chain and, when `tls.requestOCSP` asked for one, the OCSP response it
   * stapled; an error returned fails the dial with it.
   */
  onSecure?: (socket: tls.TLSSocket, chain: Certificate[], staple: Buffer | undefined) => Error | undefined;
}

export interface Dialed {
  socket: tls.TLSSocket;
  /** The server's chain as it was at secureConnect (leaf first); empty on a resumed session. */
  chain: Certificate[];
  /** The latest session for resumption (TLS 1.3 tickets arrive after the handshake), if any yet. */
  session(): Buffer | undefined;
}

/** Why a dial failed, with what was learnt before it did. */
export class DialError extends Error {
  override readonly name = 'DialError';
  constructor(
    /** The underlying error (Node's, with its `code`), or the error onSecure returned. */
    override readonly cause: unknown,
    /** The server answered our ClientHello (a handshake secret was derived). */
    readonly answered: boolean,
    /** Our side of the handshake completed (the failure came after, e.g. the server's verdict on our certificate). */
    readonly handshook: boolean,
    readonly chain: Certificate[],
    readonly protocol: string | undefined,
    readonly cipher: string | undefined,
    /** The TCP connection was established (a failure after it is not about reachability). */
    readonly connected = false,
    /** Bytes the server sent. */
    readonly serverBytes = 0,
  ) {
    super((cause as Error)?.message ?? String(cause));
  }

  /** Node's error code (ECONNREFUSED, ETIMEDOUT, ERR_SSL_...), or ''. */
  get code(): string {
    return (this.cause as NodeJS.ErrnoException)?.code ?? '';
  }
}

/**
 * The peer's chain, leaf first. Call it at 'secureConnect': on a TLS 1.3 client, Node (OpenSSL 3.0) no longer
 * returns the peer certificate once the server's NewSessionTicket has been processed.
 */
export function peerChain(socket: tls.TLSSocket): Certificate[] {
  const out: Certificate[] = [];
  let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
  const seen = new Set<string>();
  while (c && c.raw && !seen.has(c.fingerprint256)) {
    seen.add(c.fingerprint256);
    out.push(parseCertificate(c.raw));
    c = c.issuerCertificate;
  }
  return out;
}

const errorWithCode = (message: string, code: string) => Object.assign(new Error(message), { code });

export function dial(o: DialOptions): Promise<Dialed> {
  const servername = o.servername ?? o.host.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    let settled = false;
    let answered = false;
    let handshook = false;
    let chain: Certificate[] = [];
    let session: Buffer | undefined;
    const timers: NodeJS.Timeout[] = [];
    const cleanup = () => {
      settled = true;
      for (const t of timers) clearTimeout(t);
      socket.off('error', fail);
      socket.off('close', closed);
      socket.off('end', closed);
    };
    const fail = (err: unknown) => {
      if (settled) return;
      cleanup();
      const protocol = handshook ? (socket.getProtocol() ?? undefined) : undefined;
      const cipher = handshook ? socket.getCipher()?.standardName : undefined;
      socket.destroy();
      reject(new DialError(err, answered, handshook, chain, protocol, cipher, connected, tcp.bytesRead));
    };
    const succeed = () => {
      if (settled) return;
      cleanup();
      resolve({ socket, chain, session: () => session });
    };
    // Over a tapped (Duplex) socket the server's close shows as 'end' first.
    const closed = () => fail(errorWithCode('socket hang up', 'ECONNRESET'));
    const observe: tls.ConnectionOptions =
      o.verify === 'observe' ? { rejectUnauthorized: false, checkServerIdentity: () => undefined } : {};
    // Our own TCP socket under TLS: whether it connected and what the server sent decide the verdict of a failure.
    const tcp = net.connect({ host: o.host, port: o.port });
    let connected = false;
    tcp.once('connect', () => {
      connected = true;
    });
    const socket = tls.connect({
      host: o.host,
      port: o.port,
      ...o.tls,
      ...observe,
      ...(isIpLiteral(servername) ? {} : { servername }),
      socket: o.capture ? tap(tcp, o.capture, 'client') : tcp,
    });
    if (o.capture) {
      const capture = o.capture;
      socket.on('keylog', (line: Buffer) => capture.keylog.push(line.toString('latin1')));
    }
    // A key log line means the server answered our ClientHello: only then can a close be about our certificate.
    socket.once('keylog', () => {
      answered = true;
    });
    socket.on('session', (s: Buffer) => {
      session = s;
    });
    let staple: Buffer | undefined;
    socket.once('OCSPResponse', (r: Buffer | undefined) => {
      if (r?.length) staple = r;
    });
    timers.push(setTimeout(() => fail(errorWithCode('connection timed out', 'ETIMEDOUT')), o.timeoutMs));
    socket.once('error', fail);
    socket.once('secureConnect', () => {
      handshook = true;
      chain = peerChain(socket);
      const refused = o.onSecure?.(socket, chain, staple);
      if (refused) return fail(refused);
      if (o.confirmMs && socket.getProtocol() === 'TLSv1.3') {
        socket.once('close', closed);
        socket.once('end', closed);
        timers.push(setTimeout(succeed, o.confirmMs));
      } else {
        succeed();
      }
    });
  });
}
