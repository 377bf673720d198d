import { HandshakeType, ContentType, alertName } from '../wire/enums.js';
import {
  HandshakeAssembler,
  decodeCertificate,
  decodeCertificateRequest,
  decodeClientHello,
  decodeServerHello,
  type CertificateRequest,
  type ClientHello,
  type ServerHello,
} from '../wire/handshake.js';
import { RecordSplitter, type TlsRecord } from '../wire/records.js';
import { decryptRecord12, keyBlock, TLS12_SUITES, type Tls12Keys, type Tls12Suite } from '../tls12/prf.js';
import {
  decryptRecord,
  parseKeyLog,
  suiteOf,
  trafficKeys,
  type Tls13Suite,
  type TrafficKeys,
} from '../tls13/key-schedule.js';

export type Side = 'client' | 'server';

/** One handshake message as it crossed the wire, in order per direction. */
export interface SeenMessage {
  from: Side;
  type: number;
  raw: Buffer;
  body: Buffer;
  /** Carried in an encrypted record (TLS 1.3 after ServerHello). */
  encrypted: boolean;
}

export interface SeenAlert {
  from: Side;
  level: number;
  description: number;
  name: string;
  encrypted: boolean;
}

/** Key log labels of TLS 1.3 (RFC 8446 7.1 names in the NSS format). */
export const TLS13_SECRET_LABELS = [
  'CLIENT_HANDSHAKE_TRAFFIC_SECRET',
  'SERVER_HANDSHAKE_TRAFFIC_SECRET',
  'CLIENT_TRAFFIC_SECRET_0',
  'SERVER_TRAFFIC_SECRET_0',
  'EXPORTER_SECRET',
] as const;

/** What the captured bytes say about a handshake (the parts a plain Node client cannot see). */
export interface HandshakeView {
  /** The first ClientHello (after a HelloRetryRequest the second one is among `messages`). */
  clientHello?: ClientHello;
  /** The server's HelloRetryRequest, when it asked the client for another key share. */
  helloRetryRequest?: ServerHello;
  serverHello?: ServerHello;
  /** Present when the server asked for a client certificate. */
  certificateRequest?: CertificateRequest;
  /** The server's chain as sent (DER), leaf first. */
  serverCertificates?: Buffer[];
  messages: SeenMessage[];
  /** Alerts from either side, decrypted where the keys were known (TLS 1.3 sends them encrypted). */
  alerts: SeenAlert[];
  /** Convenience: the server's alerts. */
  serverAlerts: SeenAlert[];
  suite?: Tls13Suite;
  /** TLS 1.3 traffic secrets from the key log, by label. */
  secrets: Partial<Record<(typeof TLS13_SECRET_LABELS)[number], Buffer>>;
  /** Keys and IVs derived by our key schedule from those secrets. */
  keys: Partial<Record<'clientHandshake' | 'serverHandshake' | 'clientApplication' | 'serverApplication', TrafficKeys>>;
  /** TLS 1.2: the master secret (key log CLIENT_RANDOM) and the key block derived from it by our PRF. */
  tls12?: { suite: Tls12Suite; masterSecret: Buffer; keys: Tls12Keys };
  /** The first application data each side sent (decrypted), if any. */
  applicationData: { from: Side; bytes: Buffer }[];
  /** Why parts could not be read (missing keys, truncated capture). */
  notes: string[];
}

/** Decrypts one direction's TLS 1.3 records: handshake keys until that side's Finished, then application keys. */
function readEncrypted(
  view: HandshakeView,
  from: Side,
  records: TlsRecord[],
  suite: Tls13Suite,
  hs?: TrafficKeys,
  app?: TrafficKeys,
): void {
  const assembler = new HandshakeAssembler();
  let keys = hs;
  let seq = 0n;
  let phase: 'handshake' | 'application' = 'handshake';
  for (const r of records) {
    if (r.type === ContentType.change_cipher_spec) continue;
    if (r.type !== ContentType.application_data) continue;
    if (!keys) {
      view.notes.push(`no ${from} ${phase} traffic secret in the key log: later ${from} records were not read`);
      return;
    }
    const rec = decryptRecord(suite, keys, seq++, r);
    if (rec.type === ContentType.handshake && phase === 'handshake') {
      for (const m of assembler.push(rec.content)) {
        view.messages.push({ from, type: m.type, raw: m.raw, body: m.body, encrypted: true });
        if (m.type === HandshakeType.finished) {
          phase = 'application';
          keys = app;
          seq = 0n;
        }
      }
    } else if (rec.type === ContentType.alert && rec.content.length === 2) {
      view.alerts.push({
        from,
        level: rec.content[0]!,
        description: rec.content[1]!,
        name: alertName(rec.content[1]!),
        encrypted: true,
      });
    } else if (rec.type === ContentType.application_data && !view.applicationData.some((a) => a.from === from)) {
      view.applicationData.push({ from, bytes: rec.content });
    }
  }
}

/** Whether the server's first hello (ServerHello or HelloRetryRequest) selects TLS 1.3. */
function serverSpeaks13(records: TlsRecord[]): boolean {
  try {
    const first = records.find((r) => r.type === ContentType.handshake);
    if (!first) return false;
    const [m] = new HandshakeAssembler().push(first.fragment);
    return m?.type === HandshakeType.server_hello && decodeServerHello(m.body).version === 0x0304;
  } catch {
    return false;
  }
}

/**
 * Decodes a captured connection after the fact: the hellos in the clear, then (TLS 1.3) both encrypted flights
 * and later records with the secrets from the key log, or (TLS 1.2) the plaintext flights. Never throws on
 * hostile or truncated input: what cannot be read is noted.
 */
export function analyzeHandshake(clientBytes: Buffer, serverBytes: Buffer, keylogLines: string[]): HandshakeView {
  const view: HandshakeView = {
    messages: [],
    alerts: [],
    serverAlerts: [],
    secrets: {},
    keys: {},
    applicationData: [],
    notes: [],
  };
  try {
    const byDir: Record<Side, TlsRecord[]> = {
      client: new RecordSplitter().push(clientBytes),
      server: new RecordSplitter().push(serverBytes),
    };
    const speaks13 = serverSpeaks13(byDir.server);
    for (const from of ['client', 'server'] as Side[]) {
      const plain = new HandshakeAssembler();
      for (const r of byDir[from]) {
        // After ChangeCipherSpec, TLS 1.2 handshake records are encrypted. TLS 1.3 encrypts in application_data
        // records and its ChangeCipherSpec is a no-op for middleboxes (it may come before a second ClientHello).
        if (r.type === ContentType.change_cipher_spec) {
          if (speaks13) continue;
          break;
        }
        if (r.type === ContentType.handshake) {
          for (const m of plain.push(r.fragment))
            view.messages.push({ from, type: m.type, raw: m.raw, body: m.body, encrypted: false });
        } else if (r.type === ContentType.alert && r.fragment.length === 2) {
          view.alerts.push({
            from,
            level: r.fragment[0]!,
            description: r.fragment[1]!,
            name: alertName(r.fragment[1]!),
            encrypted: false,
          });
        }
      }
    }
    const ch = view.messages.find((m) => m.from === 'client' && m.type === HandshakeType.client_hello);
    const hellos = view.messages
      .filter((m) => m.from === 'server' && m.type === HandshakeType.server_hello)
      .map((m) => decodeServerHello(m.body));
    if (ch) view.clientHello = decodeClientHello(ch.body);
    const retry = hellos.find((h) => h.isHelloRetryRequest);
    if (retry) view.helloRetryRequest = retry;
    const sh = hellos.find((h) => !h.isHelloRetryRequest);
    if (sh) view.serverHello = sh;
    const tls13 = view.serverHello?.version === 0x0304;
    if (tls13 && view.clientHello && view.serverHello) {
      const keylog = parseKeyLog(keylogLines.join('\n'));
      const random = view.clientHello.random.toString('hex');
      for (const label of TLS13_SECRET_LABELS) {
        const s = keylog.get(label)?.get(random);
        if (s) view.secrets[label] = s;
      }
      const suite = suiteOf(view.serverHello.cipherSuite);
      view.suite = suite;
      const k = (label: (typeof TLS13_SECRET_LABELS)[number]) =>
        view.secrets[label] ? trafficKeys(suite, view.secrets[label]!) : undefined;
      const assign = (name: keyof HandshakeView['keys'], keys: TrafficKeys | undefined) => {
        if (keys) view.keys[name] = keys;
      };
      assign('clientHandshake', k('CLIENT_HANDSHAKE_TRAFFIC_SECRET'));
      assign('serverHandshake', k('SERVER_HANDSHAKE_TRAFFIC_SECRET'));
      assign('clientApplication', k('CLIENT_TRAFFIC_SECRET_0'));
      assign('serverApplication', k('SERVER_TRAFFIC_SECRET_0'));
      readEncrypted(view, 'server', byDir.server, suite, view.keys.serverHandshake, view.keys.serverApplication);
      readEncrypted(view, 'client', byDir.client, suite, view.keys.clientHandshake, view.keys.clientApplication);
    }
    if (view.serverHello?.version === 0x0303 && view.clientHello) readTls12(view, byDir, keylogLines);
    for (const m of view.messages.filter((x) => x.from === 'server')) {
      if (m.type === HandshakeType.certificate_request)
        view.certificateRequest = decodeCertificateRequest(m.body, tls13);
      if (m.type === HandshakeType.certificate && !view.serverCertificates)
        view.serverCertificates = decodeCertificate(m.body, tls13).certificates;
    }
  } catch (err) {
    view.notes.push(`decoding stopped: ${(err as Error).message}`);
  }
  view.serverAlerts = view.alerts.filter((a) => a.from === 'server');
  return view;
}

/** TLS 1.2 with an AEAD suite: after each side's ChangeCipherSpec, its Finished, alerts and data, with our PRF's keys. */
function readTls12(view: HandshakeView, byDir: Record<Side, TlsRecord[]>, keylogLines: string[]): void {
  const suite = TLS12_SUITES[view.serverHello!.cipherSuite];
  const master = parseKeyLog(keylogLines.join('\n'))
    .get('CLIENT_RANDOM')
    ?.get(view.clientHello!.random.toString('hex'));
  if (!suite) {
    view.notes.push(`TLS 1.2 suite ${view.serverHello!.cipherSuite.toString(16)} is not one we decrypt`);
    return;
  }
  if (!master) {
    view.notes.push('no TLS 1.2 master secret (CLIENT_RANDOM) in the key log: the encrypted records were not read');
    return;
  }
  const keys = keyBlock(suite, master, view.clientHello!.random, view.serverHello!.random);
  view.tls12 = { suite, masterSecret: master, keys };
  for (const from of ['client', 'server'] as Side[]) {
    const ccs = byDir[from].findIndex((r) => r.type === ContentType.change_cipher_spec);
    if (ccs < 0) continue;
    const [key, iv] =
      from === 'client' ? [keys.clientWriteKey, keys.clientWriteIv] : [keys.serverWriteKey, keys.serverWriteIv];
    let seq = 0n;
    for (const r of byDir[from].slice(ccs + 1)) {
      const plain = decryptRecord12(suite, key, iv, seq++, r);
      if (r.type === ContentType.handshake) {
        for (const m of new HandshakeAssembler().push(plain))
          view.messages.push({ from, type: m.type, raw: m.raw, body: m.body, encrypted: true });
      } else if (r.type === ContentType.alert && plain.length === 2) {
        view.alerts.push({
          from,
          level: plain[0]!,
          description: plain[1]!,
          name: alertName(plain[1]!),
          encrypted: true,
        });
      } else if (r.type === ContentType.application_data && !view.applicationData.some((a) => a.from === from)) {
        view.applicationData.push({ from, bytes: plain });
      }
    }
  }
}

/**
 * The server ended the connection with close_notify and no other alert: it finished the handshake with our
 * certificate and closed on purpose (openssl s_server with nothing to say does this). Our own servers and proxy deny
 * without close_notify, and a refusal of a certificate is an alert, so this is not a rejection. Needs the key log
 * in TLS 1.3, where the close_notify is encrypted.
 */
export function closedGracefully(view: HandshakeView): boolean {
  return view.serverAlerts.some((a) => a.description === 0) && !view.serverAlerts.some((a) => a.description !== 0);
}
