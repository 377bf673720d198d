import { finished12 } from '../tls12/prf.js';
import type { TrafficKeys } from '../tls13/key-schedule.js';
import { HandshakeType, groupName } from '../wire/enums.js';
import type { HandshakeView, SeenMessage } from './analyze.js';
import { judged, mask, type Line } from './step.js';

/**
 * The key material steps: TLS 1.2's key block from the master secret (RFC 5246 6.3) with both Finished checked,
 * and TLS 1.3's key schedule (RFC 8446 7.1, 7.3) with the traffic keys and IVs; secrets masked unless revealed.
 */

export function tls12KeyLines(
  view: HandshakeView,
  server: SeenMessage[],
  client: SeenMessage[],
  reveal: boolean,
): Line[] {
  const t = view.tls12!;
  // RFC 5246 7.4.9: Finished covers every handshake message before it, in wire order (client's flight first).
  const sMsgs = server.filter((m) => m.type !== HandshakeType.finished);
  const cMsgs = client.filter((m) => m.type !== HandshakeType.finished);
  const serverPlain = sMsgs.filter((m) => m.type !== HandshakeType.new_session_ticket);
  const cFin12 = client.find((m) => m.type === HandshakeType.finished);
  const sFin12 = server.find((m) => m.type === HandshakeType.finished);
  const chMsg = cMsgs.filter((m) => m.type === HandshakeType.client_hello);
  const clientRest = cMsgs.filter((m) => m.type !== HandshakeType.client_hello);
  const beforeClientFin = [...chMsg, ...serverPlain, ...clientRest].map((m) => m.raw);
  const lines: Line[] = [
    `master_secret (from the key log): ${mask(t.masterSecret, reveal)}`,
    `key_block = PRF(master_secret, "key expansion", server_random + client_random) ` +
      `(RFC 5246 6.3), ${t.suite.hash}, AEAD ${t.suite.cipher.toUpperCase()}`,
    `client_write_key: ${mask(t.keys.clientWriteKey, reveal)}`,
    `server_write_key: ${mask(t.keys.serverWriteKey, reveal)}`,
    `client_write_IV:  ${mask(t.keys.clientWriteIv, reveal)}`,
    `server_write_IV:  ${mask(t.keys.serverWriteIv, reveal)}`,
  ];
  const finLine = (who: string, ok: boolean) =>
    judged(
      ok,
      `${who} Finished: verify_data ${ok ? 'matches' : 'DOES NOT match'} PRF(master_secret, ` +
        `"${who} finished", Hash(handshake)) (checked by mtlskit)`,
    );
  if (cFin12)
    lines.push(finLine('client', finished12(t.suite, t.masterSecret, true, beforeClientFin).equals(cFin12.body)));
  if (sFin12 && cFin12) {
    const nst = sMsgs.filter((m) => m.type === HandshakeType.new_session_ticket).map((m) => m.raw);
    lines.push(
      finLine(
        'server',
        finished12(t.suite, t.masterSecret, false, [...beforeClientFin, cFin12.raw, ...nst]).equals(sFin12.body),
      ),
    );
  }
  lines.push(
    ...view.applicationData.map(
      (a) =>
        `first application data from the ${a.from}, decrypted: ${JSON.stringify(a.bytes.subarray(0, 60).toString('latin1'))}`,
    ),
  );
  return lines;
}

export function tls13KeyLines(view: HandshakeView, ks: { group: number } | undefined, reveal: boolean): Line[] {
  const suite = view.suite!;
  const k = (name: string, keys: TrafficKeys | undefined) =>
    keys ? [`${name}_write_key: ${mask(keys.key, reveal)}`, `${name}_write_iv:  ${mask(keys.iv, reveal)}`] : [];
  return [
    `ECDHE over ${ks ? groupName(ks.group) : '?'}: both sides derived the same ` +
      `shared secret; HKDF (${suite.hash}) turns it into the secrets below`,
    ...Object.entries(view.secrets).map(([label, v]) => `${label}: ${mask(v!, reveal)}`),
    `AEAD: ${suite.cipher.toUpperCase()}, per-record nonce = write_iv XOR sequence number`,
    ...k('handshake client', view.keys.clientHandshake),
    ...k('handshake server', view.keys.serverHandshake),
    ...k('client', view.keys.clientApplication),
    ...k('server', view.keys.serverApplication),
    ...view.applicationData.map((a) => {
      const shown = JSON.stringify(a.bytes.subarray(0, 60).toString('latin1'));
      return `first application data from the ${a.from}, decrypted: ${shown}${a.bytes.length > 60 ? '…' : ''}`;
    }),
  ];
}
