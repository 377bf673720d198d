import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { writeFileAtomic } from '../../src/io/files.js';
import { tempDir } from '../helpers/pki.js';

/**
 * A commit of several files (the CRLs, crl.pem) writes a journal of its renames first, so that the next writer in
 * the directory finishes them after a crash. Two replicas share HOME/crl: one wrote `.revoked` while the other was
 * renaming, replayed its live journal, moved its files from under it, and the revocation failed with ENOENT
 * (the replicas test on PostgreSQL, 1 run in 6 under load).
 */
describe('commit journals in a shared directory', () => {
  const journalIn = (dir: string, writer: { pid: number; host: string } | 'old format') => {
    const tmp = path.join(dir, '.crl.pem.0123456789ab.tmp');
    const final = path.join(dir, 'crl.pem');
    fs.writeFileSync(final, 'old\n');
    fs.writeFileSync(tmp, 'new\n');
    const moves = [{ tmp, final }];
    const journal = path.join(dir, '.intermediate.crl.abcdefabcdef.commit');
    fs.writeFileSync(journal, JSON.stringify(writer === 'old format' ? moves : { ...writer, moves }));
    return { tmp, final, journal };
  };

  it("another writer's live journal is left to it: its files stay where it put them", () => {
    const dir = tempDir();
    // This test process is alive: its journal is a writer mid-commit.
    const j = journalIn(dir, { pid: process.pid, host: os.hostname() });
    writeFileAtomic(path.join(dir, '.revoked'), 'x\n');
    assert.equal(fs.existsSync(j.journal), true, 'the journal stays');
    assert.equal(fs.readFileSync(j.tmp, 'utf8'), 'new\n', "the writer's staged file stays to be renamed by it");
    assert.equal(fs.readFileSync(j.final, 'utf8'), 'old\n');
    // A writer on another host (a home on shared storage) counts as alive while its journal is young.
    const other = journalIn(tempDir(), { pid: 1, host: `not-${os.hostname()}` });
    writeFileAtomic(path.join(path.dirname(other.journal), '.revoked'), 'x\n');
    assert.equal(fs.existsSync(other.tmp), true);
  });

  it("a dead writer's journal, an old one, or one of the old format is finished by the next writer", () => {
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
    const cases = [
      journalIn(tempDir(), { pid: Number(dead.stdout), host: os.hostname() }),
      journalIn(tempDir(), 'old format'),
    ];
    const stale = journalIn(tempDir(), { pid: process.pid, host: os.hostname() });
    const minuteAgo = new Date(Date.now() - 61_000);
    fs.utimesSync(stale.journal, minuteAgo, minuteAgo);
    for (const j of [...cases, stale]) {
      writeFileAtomic(path.join(path.dirname(j.journal), '.revoked'), 'x\n');
      assert.equal(fs.existsSync(j.journal), false, 'the journal is finished and removed');
      assert.equal(fs.readFileSync(j.final, 'utf8'), 'new\n', 'the rename it recorded is made');
      assert.equal(fs.existsSync(j.tmp), false);
    }
  });
});
