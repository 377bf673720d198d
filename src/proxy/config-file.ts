import YAML from 'yaml';
import { MtlsError } from '../errors.js';
import { MAX_INPUT, readInput } from '../io/files.js';
import { formatAddress, type Address } from '../io/address.js';
import { Reader, type Raw } from './config-reader.js';
import { listenerFrom, type ListenerConfig, type ProxyConfig } from './config.js';

/** The proxy's configuration as a whole: a YAML file (or flags) of listeners, checked together. */

/** Parses and checks a YAML config. Errors name the file and the key: `proxy.yaml: listeners[1].target: ...`. */
export function parseProxyConfig(text: string, source: string): ProxyConfig {
  let doc: unknown;
  try {
    doc = YAML.parse(text, { strict: true, uniqueKeys: true });
  } catch (err) {
    throw new MtlsError('BAD_INPUT', `${source}: not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc))
    throw new MtlsError('BAD_INPUT', `${source}: must be a mapping with a 'listeners' list`);
  const r = new Reader(doc as Raw, source, ['listeners', 'admin', 'workers', 'drainTimeout', 'logLevel']);
  const list = (doc as Raw)['listeners'];
  if (!Array.isArray(list) || list.length === 0)
    throw new MtlsError('BAD_INPUT', `${source}.listeners: give at least one listener`);
  const listeners = list.map((l, i) => {
    if (!l || typeof l !== 'object' || Array.isArray(l))
      throw new MtlsError('BAD_INPUT', `${source}.listeners[${i}]: must be a mapping`);
    return listenerFrom(l as Raw, `${source}.listeners[${i}]`, i);
  });
  checkUnique(listeners, source);
  const workersRaw = (doc as Raw)['workers'];
  const workers = workersRaw === 'auto' ? 0 : r.int('workers', 1, 1);
  const logLevel = r.str('logLevel', false) ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(logLevel))
    throw new MtlsError('BAD_INPUT', `${source}.logLevel: must be debug, info, warn or error`);
  return {
    listeners,
    workers,
    logLevel: logLevel as ProxyConfig['logLevel'],
    drainTimeoutMs: r.duration('drainTimeout', 30_000),
    ...(r.has('admin') ? { admin: r.address('admin') } : {}),
  };
}

/** Whether two listen addresses would collide: the same path, or the same port on hosts that overlap. */
export function sameSocket(a: Address, b: Address): boolean {
  if ('path' in a || 'path' in b) return 'path' in a && 'path' in b && a.path === b.path;
  if (a.port !== b.port || a.port === 0) return false;
  const host = (h: string) => (h.toLowerCase() === 'localhost' ? '127.0.0.1' : h.toLowerCase());
  const wildcard = (h: string) => h === '0.0.0.0' || h === '::';
  return host(a.host) === host(b.host) || wildcard(a.host) || wildcard(b.host);
}

export function checkUnique(listeners: ListenerConfig[], source: string): void {
  const names = new Set<string>();
  listeners.forEach((l, i) => {
    if (names.has(l.name)) throw new MtlsError('BAD_INPUT', `${source}: two listeners are named '${l.name}'`);
    names.add(l.name);
    const other = listeners.slice(0, i).find((o) => sameSocket(o.listen, l.listen));
    if (other)
      throw new MtlsError(
        'BAD_INPUT',
        `${source}: listeners '${other.name}' (${formatAddress(other.listen)}) and ` +
          `'${l.name}' (${formatAddress(l.listen)}) would listen on the same socket; ` +
          `give one another port`,
      );
  });
}

export function readProxyConfig(file: string): ProxyConfig {
  return parseProxyConfig(readInput(file, 'config', MAX_INPUT.config).toString('utf8'), file);
}
