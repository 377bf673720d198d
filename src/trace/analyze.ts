import { HandshakeType, ContentType, alertName } from '../wire/enums.js';
import {
  HandshakeAssembler, decodeCertificate, decodeCertificateRequest, decodeClientHello, decodeServerHello,
  type CertificateRequest, type ClientHello, type ServerHello,
} from '../wire/handshake.js';
import { RecordSplitter, type TlsRecord } from '../wire/records.js';
import { decryptRecord, parseKeyLog, suiteOf, trafficKeys } from '../tls13/key-schedule.js';

/** What the captured bytes say about a handshake (the parts a plain Node client cannot see). */
export interface HandshakeView {
  clientHello?: ClientHello;
  serverHello?: ServerHello;
  /** Present when the server asked for a client certificate. */
  certificateRequest?: CertificateRequest;
  /** The server's chain as sent (DER), leaf first. */
  serverCertificates?: Buffer[];
  /** Alerts from the server, decrypted where the keys were known (TLS 1.3 sends them encrypted). */
  serverAlerts: { level: number; description: number; name: string }[];
  /** Why parts could not be read (missing keys, truncated capture). */
  notes: string[];
}

/**
 * Decodes a captured connection after the fact: ClientHello and ServerHello in the clear, then (TLS 1.3) the
 * server's encrypted handshake flight and later records with the secrets from the key log, or (TLS 1.2) the
 * plaintext flight. Never throws on hostile or truncated input: what cannot be read is noted.
 */
export function analyzeHandshake(clientBytes: Buffer, serverBytes: Buffer, keylogLines: string[]): HandshakeView {
  const view: HandshakeView = { serverAlerts: [], notes: [] };
  try {
    const clientRecords = new RecordSplitter().push(clientBytes);
    const first = clientRecords.find((r) => r.type === ContentType.handshake);
    const chMsg = first ? new HandshakeAssembler().push(first.fragment)[0] : undefined;
    if (chMsg?.type === HandshakeType.client_hello) view.clientHello = decodeClientHello(chMsg.body);
    const records = new RecordSplitter().push(serverBytes);
    const plainHs = new HandshakeAssembler();
    let tls13 = false;
    let encrypted: TlsRecord[] = [];
    for (const r of records) {
      if (r.type === ContentType.handshake) {
        for (const m of plainHs.push(r.fragment)) readMessage(view, m.type, m.body, tls13, () => { tls13 = true; });
        tls13 = view.serverHello?.version === 0x0304;
      } else if (r.type === ContentType.alert && r.fragment.length === 2) {
        view.serverAlerts.push({ level: r.fragment[0]!, description: r.fragment[1]!, name: alertName(r.fragment[1]!) });
      } else if (r.type === ContentType.application_data) {
        encrypted.push(r);
      }
    }
    if (tls13 && view.serverHello && view.clientHello) {
      const keylog = parseKeyLog(keylogLines.join('\n'));
      const random = view.clientHello.random.toString('hex');
      const hsSecret = keylog.get('SERVER_HANDSHAKE_TRAFFIC_SECRET')?.get(random);
      const appSecret = keylog.get('SERVER_TRAFFIC_SECRET_0')?.get(random);
      const suite = suiteOf(view.serverHello.cipherSuite);
      if (!hsSecret) view.notes.push('no server handshake secret in the key log: the encrypted flight was not read');
      else {
        const hsKeys = trafficKeys(suite, hsSecret);
        const assembler = new HandshakeAssembler();
        let seq = 0n;
        let done = false;
        while (!done && encrypted.length > 0) {
          const rec = decryptRecord(suite, hsKeys, seq++, encrypted.shift()!);
          if (rec.type === ContentType.handshake) {
            for (const m of assembler.push(rec.content)) {
              readMessage(view, m.type, m.body, true, () => undefined);
              if (m.type === HandshakeType.finished) done = true;
            }
          } else if (rec.type === ContentType.alert) {
            view.serverAlerts.push({ level: rec.content[0]!, description: rec.content[1]!, name: alertName(rec.content[1]!) });
          }
        }
        if (appSecret) {
          const appKeys = trafficKeys(suite, appSecret);
          seq = 0n;
          for (const r of encrypted) {
            const rec = decryptRecord(suite, appKeys, seq++, r);
            if (rec.type === ContentType.alert) view.serverAlerts.push({ level: rec.content[0]!, description: rec.content[1]!, name: alertName(rec.content[1]!) });
          }
        }
        encrypted = [];
      }
    }
  } catch (err) {
    view.notes.push(`decoding stopped: ${(err as Error).message}`);
  }
  return view;
}

function readMessage(view: HandshakeView, type: number, body: Buffer, tls13: boolean, onServerHello: () => void): void {
  if (type === HandshakeType.server_hello) {
    view.serverHello = decodeServerHello(body);
    onServerHello();
  } else if (type === HandshakeType.certificate_request) {
    view.certificateRequest = decodeCertificateRequest(body, tls13);
  } else if (type === HandshakeType.certificate && !view.serverCertificates) {
    view.serverCertificates = decodeCertificate(body, tls13).certificates;
  }
}
