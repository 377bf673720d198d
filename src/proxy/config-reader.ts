import { MtlsError } from '../errors.js';
import { parseAddress, type Address } from '../io/address.js';
import { parseDuration } from '../text/duration.js';

/**
 * Reads one mapping of a proxy configuration: each key checked against the ones allowed, each value against its
 * type; a wrong type or an unknown key fails loudly with the path to it, never ignored.
 */
export type Raw = Record<string, unknown>;

export class Reader {
  constructor(
    private readonly raw: Raw,
    private readonly where: string,
    allowed: readonly string[],
  ) {
    for (const k of Object.keys(raw)) {
      if (!allowed.includes(k))
        throw new MtlsError('BAD_INPUT', `${where}: unknown key '${k}' (known: ${allowed.join(', ')})`);
    }
  }

  private fail(key: string, why: string): never {
    throw new MtlsError('BAD_INPUT', `${this.where}.${key}: ${why}`);
  }

  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }

  str(key: string, required = true): string | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return required ? this.fail(key, 'is required') : undefined;
    if (typeof v !== 'string' && typeof v !== 'number') this.fail(key, `must be a string, not ${typeof v}`);
    return String(v);
  }

  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'boolean') this.fail(key, 'must be true or false');
    return v;
  }

  list(key: string): string[] {
    const v = this.raw[key];
    if (v === undefined || v === null) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) this.fail(key, 'must be a list of strings');
    return v as string[];
  }

  duration(key: string, dflt: number, zeroOk = false): number {
    const v = this.str(key, false);
    if (v === undefined) return dflt;
    if (zeroOk && (v === '0' || v === 'none')) return 0;
    return parseDuration(v, `${this.where}.${key}`);
  }

  int(key: string, dflt: number, min: number): number {
    const v = this.raw[key];
    if (v === undefined || v === null) return dflt;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
      this.fail(key, `must be a whole number, at least ${min}`);
    return v;
  }

  address(key: string): Address {
    return parseAddress(this.str(key)!, `${this.where}.${key}`);
  }

  /** A list of mappings, each read by `each` (a scalar or a mapping where a list belongs is an error, never ignored). */
  mappings<T>(key: string, each: (item: Raw, where: string) => T): T[] | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v))
      this.fail(key, `must be a list (- prefix: ...), not ${typeof v === 'object' ? 'a mapping' : `a ${typeof v}`}`);
    return v.map((x, i) => {
      if (!x || typeof x !== 'object' || Array.isArray(x)) this.fail(`${key}[${i}]`, 'must be a mapping');
      return each(x as Raw, `${this.where}.${key}[${i}]`);
    });
  }

  object(key: string): Raw | undefined {
    const v = this.raw[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'object' || Array.isArray(v)) this.fail(key, 'must be a mapping');
    return v as Raw;
  }
}
