import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import {
  applicationSecrets,
  decryptRecord,
  messageHash,
  finishedVerifyData,
  handshakeSecrets,
  suiteOf,
  trafficKeys,
  transcriptHash,
} from '../../src/tls13/key-schedule.js';
import { ContentType, ExtensionType, HandshakeType } from '../../src/wire/enums.js';
import {
  HandshakeAssembler,
  decodeCertificate,
  decodeClientHello,
  decodeCertificateRequest,
  decodeCertificateVerify,
  decodeServerHello,
  serverKeyShare,
  type HandshakeMessage,
} from '../../src/wire/handshake.js';
import { RecordSplitter } from '../../src/wire/records.js';
import { ROOT } from '../helpers/pki.js';

/** A copy of ../shared/vectors/rfc8448 (Botan's test data, BSD-2-Clause; see the README beside it). */
const VEC = path.join(ROOT, 'test', 'fixtures', 'rfc8448', 'transcripts.vec');

function loadVectors(): Record<string, Record<string, Buffer>> {
  const out: Record<string, Record<string, Buffer>> = {};
  let section = '';
  for (const line of fs.readFileSync(VEC, 'utf8').split('\n')) {
    const s = /^\[(.+)\]$/.exec(line.trim());
    if (s) {
      section = s[1]!;
      out[section] = {};
      continue;
    }
    const kv = /^(\w+)\s*=\s*(.*)$/.exec(line);
    if (kv && section) out[section]![kv[1]!] = Buffer.from(kv[2]!.replace(/\s+/g, ''), 'hex');
  }
  return out;
}

function x25519(privateRaw: Buffer, publicRaw: Buffer): Buffer {
  const privateKey = crypto.createPrivateKey({
    key: Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), privateRaw]),
    format: 'der',
    type: 'pkcs8',
  });
  const publicKey = crypto.createPublicKey({
    key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), publicRaw]),
    format: 'der',
    type: 'spki',
  });
  return crypto.diffieHellman({ privateKey, publicKey });
}

/** Decrypts the application-data records of `bytes` (skipping compatibility ChangeCipherSpec records). */
function decryptAll(
  bytes: Buffer,
  suite: ReturnType<typeof suiteOf>,
  secret: Buffer,
  firstSeq = 0n,
): { type: number; content: Buffer }[] {
  const keys = trafficKeys(suite, secret);
  let seq = firstSeq;
  return new RecordSplitter()
    .push(bytes)
    .filter((r) => r.type !== ContentType.change_cipher_spec)
    .map((r) => {
      assert.equal(r.type, ContentType.application_data);
      return decryptRecord(suite, keys, seq++, r);
    });
}

const vectors = loadVectors();

/** The client's (EC)DHE shared secret from its private key (drawn from its RNG pool) and the server's share. */
function sharedSecret(group: number, privateRaw: Buffer, serverShare: Buffer): Buffer {
  if (group === 29) return x25519(privateRaw, serverShare);
  assert.equal(group, 23, 'secp256r1');
  const ecdh = crypto.createECDH('prime256v1');
  ecdh.setPrivateKey(privateRaw);
  return ecdh.computeSecret(serverShare);
}

for (const name of [
  'Simple_1RTT_Handshake',
  'HelloRetryRequest_Handshake',
  'Client_Authentication_Handshake',
  'Middlebox_Compatibility_Mode',
]) {
  describe(`RFC 8448 transcript: ${name}`, () => {
    const v = vectors[name]!;
    const clientHello = new RecordSplitter().push(v['Record_ClientHello_1']!)[0]!.fragment;
    const serverHelloMsg = v['Message_ServerHello']!;
    const sh = decodeServerHello(serverHelloMsg.subarray(4));
    const suite = suiteOf(sh.cipherSuite);
    const share = serverKeyShare(sh)!;
    // The client drew its random, then (middlebox mode) a legacy session id, then its X25519 private key; after
    // a HelloRetryRequest it drew the private key for the group the server asked for next.
    const keyAt = 32 + decodeClientHello(clientHello.subarray(4)).sessionId.length;
    const hrr = v['Record_HelloRetryRequest']
      ? new RecordSplitter().push(v['Record_HelloRetryRequest'])[0]!.fragment
      : undefined;
    const secondHello = v['Record_ClientHello_2']
      ? new RecordSplitter().push(v['Record_ClientHello_2'])[0]!.fragment
      : undefined;
    const privateAt = hrr ? keyAt + 32 : keyAt;
    const shared = sharedSecret(share.group, v['Client_RNG_Pool']!.subarray(privateAt, privateAt + 32), share.key);
    // RFC 8446 4.4.1: after a HelloRetryRequest the first ClientHello enters the transcript as message_hash.
    const hello = hrr ? [messageHash(suite.hash, clientHello), hrr, secondHello!] : [clientHello];
    const secrets = handshakeSecrets(suite.hash, shared, transcriptHash(suite.hash, ...hello, serverHelloMsg));
    const serverRecords = decryptAll(v['Record_ServerHandshakeMessages']!, suite, secrets.serverHandshakeTrafficSecret);
    const serverMessages: HandshakeMessage[] = new HandshakeAssembler().push(
      Buffer.concat(serverRecords.map((r) => r.content)),
    );

    if (hrr) {
      it(
        'decodes the HelloRetryRequest: the group the server asks for and the cookie ' +
          'the second ClientHello echoes',
        () => {
          const retry = decodeServerHello(hrr.subarray(4));
          assert.equal(retry.isHelloRetryRequest, true);
          assert.deepEqual(serverKeyShare(retry), { group: 23, key: Buffer.alloc(0) });
          const cookie = retry.extensions.find((e) => e.type === ExtensionType.cookie)!.data;
          const ch2 = decodeClientHello(secondHello!.subarray(4));
          assert.deepEqual(ch2.extensions.find((e) => e.type === ExtensionType.cookie)!.data, cookie);
          assert.deepEqual(ch2.random, decodeClientHello(clientHello.subarray(4)).random, 'the same client random');
          assert.equal(share.group, 23);
        },
      );
    }

    it('derives the handshake traffic keys and decrypts every server handshake message exactly', () => {
      assert.equal(sh.version, 0x0304);
      assert.equal(share.group, hrr ? 23 : 29);
      assert.ok(serverRecords.every((r) => r.type === ContentType.handshake));
      const expected = [
        'Message_EncryptedExtensions',
        'Message_CertificateRequest',
        'Message_Server_Certificate',
        'Message_Server_CertificateVerify',
        'Message_Server_Finished',
      ]
        .filter((k) => v[k])
        .map((k) => v[k]!.toString('hex'));
      assert.deepEqual(
        serverMessages.map((m) => m.raw.toString('hex')),
        expected,
      );
      if (name === 'Simple_1RTT_Handshake') {
        const keys = trafficKeys(suite, secrets.serverHandshakeTrafficSecret);
        assert.equal(keys.key.toString('hex'), '3fce516009c21727d0f2e4e86ee403bc');
        assert.equal(keys.iv.toString('hex'), '5d313eb2671276ee13000b30');
      }
    });

    it(
      'checks the server CertificateVerify against the transcript and the certificate ' +
        'key, and the server Finished',
      () => {
        const idx = (t: number) => serverMessages.findIndex((m) => m.type === t);
        const certMsg = serverMessages[idx(HandshakeType.certificate)]!;
        const cvIdx = idx(HandshakeType.certificate_verify);
        const upToCert = [...hello, serverHelloMsg, ...serverMessages.slice(0, cvIdx).map((m) => m.raw)];
        const content = Buffer.concat([
          Buffer.alloc(64, 0x20),
          Buffer.from('TLS 1.3, server CertificateVerify\0', 'latin1'),
          transcriptHash(suite.hash, ...upToCert),
        ]);
        assert.equal(content.toString('hex'), v['Server_MessageToSign']!.toString('hex'));
        const cv = decodeCertificateVerify(serverMessages[cvIdx]!.body);
        const leaf = new crypto.X509Certificate(decodeCertificate(certMsg.body, true).certificates[0]!);
        const pss = cv.scheme >= 0x0804 && cv.scheme <= 0x0806;
        const ok = crypto.verify(
          'sha256',
          content,
          pss
            ? { key: leaf.publicKey, padding: crypto.constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }
            : leaf.publicKey,
          cv.signature,
        );
        assert.equal(ok, true);
        const finished = serverMessages.at(-1)!;
        const upToCv = [...hello, serverHelloMsg, ...serverMessages.slice(0, -1).map((m) => m.raw)];
        assert.deepEqual(
          finished.body,
          finishedVerifyData(suite.hash, secrets.serverHandshakeTrafficSecret, transcriptHash(suite.hash, ...upToCv)),
        );
      },
    );

    it('decrypts the client flight and checks the client Finished (and its Certificate/CertificateVerify with client auth)', () => {
      const records = decryptAll(v['Record_ClientFinished']!, suite, secrets.clientHandshakeTrafficSecret);
      const msgs = new HandshakeAssembler().push(Buffer.concat(records.map((r) => r.content)));
      const types = msgs.map((m) => m.type);
      if (name === 'Client_Authentication_Handshake') {
        assert.deepEqual(types, [HandshakeType.certificate, HandshakeType.certificate_verify, HandshakeType.finished]);
        const req = decodeCertificateRequest(
          serverMessages.find((m) => m.type === HandshakeType.certificate_request)!.body,
          true,
        );
        assert.ok(req.signatureAlgorithms.includes(0x0403));
        assert.equal(decodeCertificate(msgs[0]!.body, true).certificates.length, 1);
      } else {
        assert.deepEqual(types, [HandshakeType.finished]);
      }
      const transcript = [
        ...hello,
        serverHelloMsg,
        ...serverMessages.map((m) => m.raw),
        ...msgs.slice(0, -1).map((m) => m.raw),
      ];
      assert.deepEqual(
        msgs.at(-1)!.body,
        finishedVerifyData(suite.hash, secrets.clientHandshakeTrafficSecret, transcriptHash(suite.hash, ...transcript)),
      );
    });

    it('derives the application traffic keys and decrypts application data and close_notify', () => {
      const app = applicationSecrets(
        suite.hash,
        secrets.masterSecret,
        transcriptHash(suite.hash, ...hello, serverHelloMsg, ...serverMessages.map((m) => m.raw)),
      );
      if (v['Record_Client_AppData']) {
        const [rec] = decryptAll(v['Record_Client_AppData']!, suite, app.clientApplicationTrafficSecret);
        assert.equal(rec!.type, ContentType.application_data);
        assert.deepEqual(rec!.content, v['Client_AppData']);
      }
      const [close] = decryptAll(
        v['Record_Client_CloseNotify']!,
        suite,
        app.clientApplicationTrafficSecret,
        v['Record_Client_AppData'] ? 1n : 0n,
      );
      assert.equal(close!.type, ContentType.alert);
      assert.deepEqual([...close!.content], [1, 0]);
      assert.throws(
        () => decryptAll(v['Record_Client_CloseNotify']!, suite, app.serverApplicationTrafficSecret),
        /does not decrypt/,
      );
    });
  });
}
