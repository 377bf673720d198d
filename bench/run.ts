/** `npm run bench`: every benchmark, side by side with its peers, written to BENCHMARKS.md. */
import fs from 'node:fs';
import os from 'node:os';
import { handshakeSection } from './handshakes.js';
import { issuanceSection } from './issuance.js';
import { proxySection } from './proxy.js';
import { verifySection } from './verify.js';
import { revocationSection } from './revocation.js';
import { caServiceSection } from './ca-service.js';

const header = `# Benchmarks

Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)} (Node ${process.version}, ${os.cpus().length} cores,
${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}). The machine is shared and noisy: compare the ratios, which are
measured in the same run against a peer with interleaved rounds; absolute figures drift from run to run.
`;
const only = process.env['BENCH_ONLY'];
const sections = [
  ...(!only || only === 'issuance' ? [await issuanceSection()] : []),
  ...(!only || only === 'verify' ? [await verifySection()] : []),
  ...(!only || only === 'revocation' ? [await revocationSection()] : []),
  ...(!only || only === 'ca-service' ? [await caServiceSection()] : []),
  ...(!only || only === 'handshakes' ? [await handshakeSection()] : []),
  ...(!only || only === 'proxy' ? [await proxySection()] : []),
];
/** With BENCH_ONLY, the other sections of the existing BENCHMARKS.md stay as they were; the new one replaces its namesake. */
function merged(fresh: string[]): string[] {
  if (!only || !fs.existsSync('BENCHMARKS.md')) return fresh;
  const old = fs
    .readFileSync('BENCHMARKS.md', 'utf8')
    .split(/\n(?=## )/)
    .slice(1);
  const title = (s: string) => s.slice(0, s.indexOf('\n'));
  const out = old.map((s) => fresh.find((f) => title(f) === title(s)) ?? s);
  return [...out, ...fresh.filter((f) => !old.some((s) => title(s) === title(f)))];
}
const md = [header, ...merged(sections)].join('\n');
fs.writeFileSync('BENCHMARKS.md', md);
process.stdout.write(md);
