import assert from 'node:assert/strict';
import { it } from 'node:test';
import { exitCodeOf, MtlsError } from '../../src/errors.js';
import { authorizationFailure, classifyTlsError } from '../../src/tls/errors.js';

const err = (code: string, message = code) => Object.assign(new Error(message), { code });

it('maps TLS failures to stable codes, one-line messages that say what to do, and exit codes', () => {
  const table: [unknown, { sentOurCert?: boolean }, string, RegExp, number][] = [
    [err('ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED'), {}, 'PEER_REQUIRES_CERT', /pass --cert and --key/, 3],
    [
      err('ERR_SSL_TLSV1_ALERT_UNKNOWN_CA'),
      { sentOurCert: true },
      'PEER_REJECTED_OUR_CERT',
      /does not trust the CA that issued our certificate/,
      3,
    ],
    [
      err('ERR_SSL_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE'),
      { sentOurCert: true },
      'PEER_REJECTED_OUR_CERT',
      /wrong EKU\?/,
      3,
    ],
    [
      err('ERR_SSL_TLSV1_ALERT_ACCESS_DENIED'),
      { sentOurCert: true },
      'PEER_REJECTED_OUR_CERT',
      /ask for an allow rule/,
      3,
    ],
    [
      err('ECONNRESET', 'socket hang up'),
      { sentOurCert: true },
      'PEER_CLOSED_AFTER_OUR_CERT',
      /most likely rejected it/,
      3,
    ],
    [err('ECONNRESET', 'socket hang up'), {}, 'HANDSHAKE_FAILED', /TLS handshake failed/, 1],
    [err('UNABLE_TO_VERIFY_LEAF_SIGNATURE'), {}, 'CERT_UNTRUSTED', /check --ca/, 1],
    [err('CERT_HAS_EXPIRED'), {}, 'CERT_EXPIRED', /renew it/, 1],
    [err('ERR_TLS_CERT_ALTNAME_INVALID'), {}, 'SERVER_IDENTITY_MISMATCH', /--servername/, 1],
    [err('ERR_SSL_WRONG_VERSION_NUMBER'), {}, 'NOT_TLS', /does not speak TLS/, 4],
    [err('ECONNREFUSED'), {}, 'UNREACHABLE', /nothing listens/, 4],
  ];
  for (const [input, ctx, code, message, exit] of table) {
    const e = classifyTlsError(input, { ...ctx, peer: 'h:1' });
    assert.equal(e.code, code, `${(input as Error).message}`);
    assert.match(e.message, message);
    assert.ok(!e.message.includes('\n'));
    assert.equal(exitCodeOf(e), exit, code);
  }
});

it('maps OpenSSL verify results on the server side', () => {
  assert.equal(authorizationFailure('INVALID_PURPOSE')!.code, 'CERT_WRONG_PURPOSE');
  assert.equal(authorizationFailure('CERT_HAS_EXPIRED')!.code, 'CERT_EXPIRED');
  assert.equal(authorizationFailure('SOMETHING_NEW')!.code, 'CERT_UNTRUSTED');
  assert.match(authorizationFailure('SOMETHING_NEW')!.message, /SOMETHING_NEW/);
  assert.equal(authorizationFailure(null), undefined);
  assert.equal(exitCodeOf(new MtlsError('BAD_SPIFFE_ID', 'x')), 2);
});
