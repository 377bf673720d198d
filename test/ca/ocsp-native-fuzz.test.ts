/**
 * The native OCSP front reads attacker-chosen DER in C (native/answers.cc simpleRequest) to find a request's
 * CertIDs and nonce, and answers from its cache when it has seen them. Mutated requests must neither crash it nor
 * get an answer the responder itself would not give: each mutated request's answer from the front is compared with
 * the responder's own verdict on the same bytes (successful, malformedRequest, unauthorized, and the statuses).
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CertificateAuthority } from '../../src/ca/authority.js';
import { OcspResponder } from '../../src/ca/ocsp-responder.js';
import { serveOcsp, type OcspServer } from '../../src/ca/ocsp-server.js';
import { readChildren, readSingle } from '../../src/pki/der.js';
import { ocspRequest } from '../../src/pki/ocsp-check.js';
import { nativeUnavailable } from '../../src/proxy/native.js';
import { tempDir } from '../helpers/pki.js';

const skip = nativeUnavailable();

/** What an OCSPResponse says, without its signature and times: the response status, and each CertStatus tag. */
function verdict(der: Buffer): string {
  try {
    const [status, bytes] = readChildren(readSingle(der, 'resp').value, 'OCSPResponse');
    if (!bytes) return `status ${status!.value[0]}`;
    const basic = readSingle(readChildren(readSingle(bytes.value, 'rb').value, 'rb')[1]!.value, 'basic');
    const tbs = readChildren(readChildren(basic.value, 'basic')[0]!.value, 'tbs');
    const responses = tbs.find((t) => t.tag === 0x30)!; // responderID is [1] or [2], producedAt a GeneralizedTime
    const statuses = readChildren(responses.value, 'responses').map((r) => {
      const [certId, certStatus] = readChildren(r.value, 'single');
      return `${certId!.value.toString('hex')}=${certStatus!.tag.toString(16)}`;
    });
    return `ok ${statuses.join(',')}`;
  } catch (err) {
    return `unreadable: ${(err as Error).message}`;
  }
}

describe('mtls ca ocsp native front, mutated requests', { skip }, () => {
  let ca: CertificateAuthority;
  let responder: OcspResponder;
  let server: OcspServer;
  let url = '';
  const errors: string[] = [];

  before(async () => {
    ca = await CertificateAuthority.init({ home: path.join(tempDir('mtls-ocsp-fuzz-'), 'ca'), name: 'Fuzz' });
    responder = new OcspResponder(ca);
    server = await serveOcsp(responder, ca.home, { host: '127.0.0.1', port: 0 }, (m) => errors.push(m), {
      engine: 'native',
    });
    url = `http://127.0.0.1:${server.port}/ocsp`;
  });
  after(async () => {
    await server?.close();
    await ca?.close();
  });

  it('answers 1,500 mutations of cached requests as the responder itself does, and keeps answering', async () => {
    const issued = [];
    for (let i = 0; i < 3; i++)
      issued.push(
        await ca.issue({ profile: 'client', name: `c${i}`, names: { spiffeId: `spiffe://f.example/c${i}` } }),
      );
    await ca.revoke(issued[2]!.certificate, { reason: 'keyCompromise' });
    const seeds = [
      ocspRequest(issued[0]!.certificate, ca.intermediate).der, // with a nonce
      ocspRequest(issued[1]!.certificate, ca.intermediate, { nonce: false }).der,
      ocspRequest(issued[2]!.certificate, ca.intermediate).der,
      ocspRequest(ca.intermediate, ca.root).der, // the root's responder
    ];
    const post = async (body: Buffer) => {
      const r = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/ocsp-request' } });
      return { status: r.status, body: Buffer.from(await r.arrayBuffer()) };
    };
    // Warm the cache with every seed, twice: later mutations hit C's parser with entries to confuse them with.
    for (const s of [...seeds, ...seeds]) assert.equal((await post(s)).status, 200);
    const before = server.stats();
    const random = (n: number) => crypto.randomInt(n);
    let compared = 0;
    for (let i = 0; i < 1500; i++) {
      const seed = seeds[i % seeds.length]!;
      let m = Buffer.from(seed);
      const kind = random(4);
      if (kind === 0) for (let k = 0; k <= random(3); k++) m[random(m.length)] ^= 1 << random(8);
      else if (kind === 1) m = m.subarray(0, random(m.length));
      else if (kind === 2) m = Buffer.concat([m, crypto.randomBytes(1 + random(8))]);
      else m[random(m.length)] = [0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0xff][random(7)]!;
      const got = await post(m);
      assert.equal(got.status, 200, `mutation ${i}: HTTP ${got.status}`);
      const own = await responder.answer(m);
      assert.equal(verdict(got.body), verdict(own), `mutation ${i} (${m.toString('hex')})`);
      compared++;
    }
    assert.equal(compared, 1500);
    const after = server.stats();
    assert.ok(after.hits > before.hits, 'some mutations left the CertIDs alone and were answered by the front');
    assert.ok(after.misses > before.misses, 'the others went to the responder');
    // Still answering the seeds, from the cache.
    for (const s of seeds) assert.match(verdict((await post(s)).body), /^ok /);
    assert.deepEqual(errors, []);
  });
});
