/**
 * An MtlsHttpsAgent that follows a CredentialHolder (RenewingCredentials, CredentialReloader) must not outlive its
 * use on the holder: a program that makes agents and drops them, against one holder that lives as long as the
 * process, would otherwise collect one listener (and one agent, with its sockets' state) per agent made.
 */
import assert from 'node:assert/strict';
import v8 from 'node:v8';
import vm from 'node:vm';
import { after, before, describe, it } from 'node:test';
import { MtlsHttpsAgent } from '../../src/adapters/agents.js';
import { CredentialHolder } from '../../src/tls/reload.js';
import { testPki, type TestPki } from '../helpers/endpoints.js';

v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;

describe('MtlsHttpsAgent and its CredentialHolder', () => {
  let pki: TestPki;
  before(async () => {
    pki = await testPki();
  });
  after(() => pki.ca.close());

  it('destroy() takes its listener off the holder', () => {
    const holder = new CredentialHolder(pki.creds('billing'));
    const agents = Array.from({ length: 20 }, () => new MtlsHttpsAgent({ credentials: holder, ca: pki.bundle }));
    assert.equal(holder.listenerCount('reloaded'), 20);
    for (const a of agents) a.destroy();
    assert.equal(holder.listenerCount('reloaded'), 0);
  });

  it('an agent dropped without destroy() is collected, and its listener goes with it', async () => {
    const holder = new CredentialHolder(pki.creds('billing'));
    (() => {
      for (let i = 0; i < 200; i++) new MtlsHttpsAgent({ credentials: holder, ca: pki.bundle });
    })();
    assert.equal(holder.listenerCount('reloaded'), 200);
    const t0 = Date.now();
    while (holder.listenerCount('reloaded') > 10 && Date.now() - t0 < 5000) {
      gc();
      await new Promise((r) => setTimeout(r, 20)); // finalizers run after the collection, on the event loop
    }
    assert.ok(holder.listenerCount('reloaded') <= 10, `${holder.listenerCount('reloaded')} listeners left`);
  });

  it('a live agent still follows: after a change it presents the new certificate', () => {
    class Swappable extends CredentialHolder {
      swap(next: ReturnType<TestPki['creds']>) {
        this.apply(next);
      }
    }
    const holder = new Swappable(pki.creds('billing'));
    const agent = new MtlsHttpsAgent({ credentials: holder, ca: pki.bundle });
    holder.swap(pki.creds('web'));
    assert.equal(String((agent.options as { cert?: unknown }).cert), String(pki.creds('web').cert));
    agent.destroy();
  });
});
