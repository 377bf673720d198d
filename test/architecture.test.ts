/**
 * The layer rule of mtlskit, as data and a test (after Go's src/go/build/deps_test.go): a statement of policy
 * that fails on a new arrow. Read POLICY from the bottom up: each folder of src/ may import the folders it lists
 * and, through them, everything they may import. A change that needs a new arrow changes this file, in review.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const POLICY: Record<string, string[]> = {
  // The pure core: data in, data out. No sockets, no files, no clock of their own.
  errors: [],
  text: ['errors'], // durations, terminal styles
  wire: ['errors'], // the TLS codec
  tls12: ['wire'],
  tls13: ['wire'],
  pki: ['text'], // certificates, names, path validation
  identity: ['pki'], // who the peer is, and whether policy lets it in
  // Effects.
  io: ['errors'], // files, addresses, listening sockets
  store: ['pki', 'io'], // the certificate inventory
  tls: ['identity', 'io'], // Node TLS endpoints, the dialer, the byte tap
  http: ['tls'], // per-request authorization
  trace: ['tls', 'tls12', 'tls13'],
  doctor: ['trace'],
  adapters: ['http'],
  ca: ['store', 'tls'], // the CA, and the CA as a service (its TLS server options)
  agent: ['ca'], // keeps a certificate from the CA service renewed
  proxy: ['http'],
  demo: ['ca', 'doctor'],
  cli: ['demo', 'adapters', 'proxy', 'agent'],
  // The library's entry point (src/index.ts) exports every layer but the CLI.
  index: ['doctor', 'adapters', 'ca', 'proxy', 'agent'],
};

const PURE = new Set(['errors', 'text', 'wire', 'tls12', 'tls13', 'pki']);
/** Node modules that do I/O: a pure layer imports none of them, not even for a type. */
const IO_MODULES =
  /^node:(net|tls|fs|fs\/promises|http|https|http2|dgram|child_process|worker_threads|cluster|os|dns|readline)$/;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'src');

function layerOf(file: string): string {
  const rel = path.relative(root, file).split(path.sep);
  return rel.length === 1 ? rel[0]!.replace(/\.ts$/, '') : rel[0]!;
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? sources(p) : e.name.endsWith('.ts') && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

/** Every `import ... from 'x'` and `export ... from 'x'` of a file (and dynamic `import('x')`), with its line. */
function importsOf(file: string): { spec: string; line: number }[] {
  const text = fs.readFileSync(file, 'utf8');
  const out: { spec: string; line: number }[] = [];
  const re =
    /(?:^|\n)\s*(?:import|export)\b[^'"`;]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|(?:^|\n)\s*import\s*['"]([^'"]+)['"]/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    out.push({ spec: (m[1] ?? m[2] ?? m[3])!, line: text.slice(0, m.index).split('\n').length });
  }
  return out;
}

function closure(): Map<string, Set<string>> {
  const memo = new Map<string, Set<string>>();
  const walk = (layer: string, stack: string[]): Set<string> => {
    if (memo.has(layer)) return memo.get(layer)!;
    assert.ok(!stack.includes(layer), `the policy itself has a cycle: ${[...stack, layer].join(' -> ')}`);
    assert.ok(POLICY[layer], `layer '${layer}' is used in POLICY but not declared`);
    const all = new Set<string>();
    for (const d of POLICY[layer]!) {
      all.add(d);
      for (const x of walk(d, [...stack, layer])) all.add(x);
    }
    memo.set(layer, all);
    return all;
  };
  for (const l of Object.keys(POLICY)) walk(l, []);
  return memo;
}

const files = sources(root);
const allowed = closure();

test('every folder of src/ is a layer of the policy', () => {
  const layers = new Set(files.map(layerOf));
  for (const l of layers)
    assert.ok(POLICY[l], `src/${l} is not in POLICY (test/architecture.test.ts): say where it sits`);
  for (const l of Object.keys(POLICY)) assert.ok(layers.has(l), `POLICY names '${l}', which src/ no longer has`);
});

test('imports follow the layer rule: no arrow upward, nothing imports the CLI', () => {
  const bad: string[] = [];
  for (const f of files) {
    const from = layerOf(f);
    for (const { spec, line } of importsOf(f)) {
      if (!spec.startsWith('.')) continue;
      const to = layerOf(path.resolve(path.dirname(f), spec.replace(/\.js$/, '.ts')));
      if (to !== from && !allowed.get(from)!.has(to))
        bad.push(`src/${path.relative(root, f)}:${line} (${from}) imports ${spec} (${to})`);
    }
  }
  assert.deepEqual(bad, [], `arrows the policy does not allow:\n  ${bad.join('\n  ')}`);
});

test('the pure layers import no I/O module of Node, not even for a type', () => {
  const bad: string[] = [];
  for (const f of files) {
    if (!PURE.has(layerOf(f))) continue;
    for (const { spec, line } of importsOf(f))
      if (IO_MODULES.test(spec)) bad.push(`src/${path.relative(root, f)}:${line} imports ${spec}`);
  }
  assert.deepEqual(bad, []);
});

test('no import cycle between files', () => {
  const graph = new Map<string, string[]>();
  for (const f of files) {
    graph.set(
      f,
      importsOf(f)
        .filter((i) => i.spec.startsWith('.'))
        .map((i) => path.resolve(path.dirname(f), i.spec.replace(/\.js$/, '.ts'))),
    );
  }
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const visit = (f: string, stack: string[]) => {
    if (state.get(f) === 'done') return;
    if (state.get(f) === 'open') {
      cycles.push([...stack.slice(stack.indexOf(f)), f].map((x) => path.relative(root, x)).join(' -> '));
      return;
    }
    state.set(f, 'open');
    for (const d of graph.get(f) ?? []) visit(d, [...stack, f]);
    state.set(f, 'done');
  };
  for (const f of files) visit(f, []);
  assert.deepEqual(cycles, []);
});

test('the checker sees an upward arrow (a policy test that cannot fail proves nothing)', () => {
  const from = 'pki';
  assert.ok(!allowed.get(from)!.has('tls'), 'pki must not reach tls');
  assert.ok(
    !allowed.get('proxy')!.has('cli') && ![...allowed.values()].some((s) => s.has('cli')),
    'nothing may reach cli',
  );
  assert.ok(allowed.get('cli')!.has('pki') && allowed.get('proxy')!.has('identity'), 'the closure is transitive');
  const sample =
    "import { x } from '../tls/client.js';\nexport { y } from './z.js';\nconst m = await import('../cli/main.js');\n";
  const tmp = path.join(fs.mkdtempSync(path.join(process.env['TMPDIR'] ?? '/tmp', 'arch-')), 'sample.ts');
  fs.writeFileSync(tmp, sample);
  assert.deepEqual(
    importsOf(tmp).map((i) => i.spec),
    ['../tls/client.js', './z.js', '../cli/main.js'],
  );
  fs.rmSync(path.dirname(tmp), { recursive: true });
});
