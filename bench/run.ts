/** `npm run bench`: every benchmark, side by side with its peers, written to BENCHMARKS.md. */
import fs from 'node:fs';
import os from 'node:os';
import { handshakeSection } from './handshakes.js';
import { issuanceSection } from './issuance.js';
import { proxySection } from './proxy.js';

const header = `# Benchmarks

Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)} (Node ${process.version}, ${os.cpus().length} cores,
${os.cpus()[0]?.model.trim() ?? 'unknown CPU'}). The machine is shared and noisy: compare the ratios, which are
measured in the same run against a peer with interleaved rounds; absolute figures drift from run to run.
`;
const only = process.env['BENCH_ONLY'];
const sections = [
  ...(!only || only === 'issuance' ? [await issuanceSection()] : []),
  ...(!only || only === 'handshakes' ? [await handshakeSection()] : []),
  ...(!only || only === 'proxy' ? [await proxySection()] : []),
];
const md = [header, ...sections].join('\n');
fs.writeFileSync('BENCHMARKS.md', md);
process.stdout.write(md);
