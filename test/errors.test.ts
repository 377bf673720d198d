/** The one error taxonomy (issue 17): every outcome list maps onto MtlsError's codes, and each code onto one exit. */
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { codeInfo, ERROR_CODES, exitCodeFor, FAMILIES } from '../src/errors.js';
import { DIAGNOSES, doctorExitCode, type DiagnosisCode } from '../src/doctor/codes.js';
import { VERIFY_PROBLEMS } from '../src/pki/path-rules.js';
import { renderTrace } from '../src/trace/render.js';

it('each code sits in one family, whose exit status the CLI uses', () => {
  const exits = new Map(Object.entries(FAMILIES).map(([f, v]) => [f, v.exit]));
  for (const code of ERROR_CODES) assert.equal(exitCodeFor(code), exits.get(codeInfo(code).family), code);
  assert.equal(exitCodeFor('BAD_PEM'), 2);
  assert.equal(exitCodeFor('KEY_MISMATCH'), 2, "a key that is not the certificate's is unusable input");
  assert.equal(exitCodeFor('CERT_EXPIRED'), 1);
  assert.equal(exitCodeFor('NOT_AUTHORIZED'), 3);
  assert.equal(exitCodeFor('NOT_TLS'), 4);
  assert.equal(exitCodeFor('ENGINE_UNAVAILABLE'), 1);
  assert.equal(codeInfo('PEER_NOT_ALLOWED').alert, 'access_denied');
  assert.equal(codeInfo('CERT_REVOKED').alert, 'certificate_revoked');
});

it("doctor's diagnoses and path validation's problems map onto the codes, so onto the same exits", () => {
  for (const [d, code] of Object.entries(DIAGNOSES)) {
    assert.equal(doctorExitCode(d as DiagnosisCode), code === null ? 0 : exitCodeFor(code), d);
    if (code !== null) assert.ok(ERROR_CODES.includes(code), `${d} -> ${code}`);
  }
  // What users script against: 3 when the server refused us, 4 when it is not there, 2 for our own bad input.
  assert.equal(doctorExitCode('NOT_AUTHORIZED'), 3);
  assert.equal(doctorExitCode('OUR_CA_UNKNOWN'), 3);
  assert.equal(doctorExitCode('UNREACHABLE'), 4);
  assert.equal(doctorExitCode('NOT_TLS'), 4);
  assert.equal(doctorExitCode('KEY_MISMATCH'), 2);
  assert.equal(doctorExitCode('SERVER_UNTRUSTED'), 1);
  for (const code of Object.values(VERIFY_PROBLEMS)) assert.equal(exitCodeFor(code), 1, code);
});

it('the trace renderer colours a line by the result of its check, never by the words in it', () => {
  const lines = renderTrace(
    {
      ok: true,
      protocol: 'TLSv1.3',
      cipherSuite: 'TLS_AES_128_GCM_SHA256',
      steps: [
        {
          n: 1,
          title: 'Alert from the server: access_denied',
          direction: 'server->client',
          kind: 'alert',
          lines: ['the word matches', 'signature valid', 'DOES NOT match'],
          checks: [
            { line: 1, ok: false },
            { line: 2, ok: true },
          ],
        },
      ],
    },
    { color: true },
  );
  assert.equal(lines[2], '│   the word matches', 'a line that is not a check is not coloured');
  assert.equal(lines[3], '│   \x1b[31msignature valid\x1b[0m');
  assert.equal(lines[4], '│   \x1b[32mDOES NOT match\x1b[0m');
  assert.match(lines[1]!, /^\x1b\[31m/, 'an alert step is red');
});
