/**
 * The path a route policy decides on, and the one forwarded: one normalization, so that the proxy (or the
 * library's policy) and the backend can never disagree about which resource a request names. Envoy shipped this
 * bug (CVE-2019-9901: `/public/../admin` matched as `/public`, served by the backend as `/admin`) and now
 * normalizes as below (`normalize_path`, `merge_slashes`); we do the same and refuse what cannot be made safe.
 */

export interface PathOptions {
  /**
   * Collapse runs of `/` into one (`//admin` -> `/admin`), as nginx and most frameworks do when they route. Default
   * true. Turn it off only for a backend that treats `//a` and `/a` as different resources.
   */
  mergeSlashes?: boolean;
}

export type NormalizedTarget =
  | {
      ok: true;
      /** The normalized path, starting with `/`. */ path: string;
      /** `?query` as sent, or ''. */ query: string;
    }
  | { ok: false; /** One line for the 400 answer and the log. */ reason: string };

const UNRESERVED = /[A-Za-z0-9\-._~]/;
const HEX = /^[0-9A-Fa-f]{2}$/;
/** What a path may hold after percent-decoding (RFC 3986 pchar, `/` and `%`); anything else is refused. */
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/;
/** A query may also hold `/` and `?`; still no spaces, controls, `#` or bytes above 0x7e. */
const QUERY_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*$/;
const MAX_TARGET = 16 * 1024;

/**
 * Normalizes an HTTP request-target (RFC 9112 3.2) for authorization (RFC 3986 section 6.2.2): origin-form
 * `/path?query` or absolute-form `http(s)://host/path?query` (the authority is dropped: the proxy forwards to its
 * own target). Percent-encoded unreserved characters are decoded (`%61` -> `a`), other escapes upper-cased, dot
 * segments removed (also when written `%2e`), slashes merged (by default). Refused: an encoded `/` or `\` (`%2F`,
 * `%5C`: the backend may decode them into a separator), an encoded NUL or control character, a raw `\`, an
 * invalid escape, a `..` that climbs above the root, a fragment, any other form of target.
 */
export function normalizeRequestTarget(target: string, opts: PathOptions = {}): NormalizedTarget {
  const fail = (reason: string): NormalizedTarget => ({ ok: false, reason });
  if (target.length > MAX_TARGET) return fail(`the request target is longer than ${MAX_TARGET} characters`);
  let rest = target;
  const abs = /^https?:\/\/[^/?#]*/i.exec(rest);
  if (abs) rest = rest.slice(abs[0].length) || '/';
  if (!rest.startsWith('/'))
    return fail('the request target must be a path starting with / (or an absolute http(s) URL)');
  const q = rest.indexOf('?');
  const rawPath = q < 0 ? rest : rest.slice(0, q);
  const query = q < 0 ? '' : rest.slice(q);
  if (rawPath.includes('\\')) return fail("the path holds a backslash, which some servers read as '/'");
  if (!PATH_CHARS.test(rawPath))
    return fail(
      'the path holds a character that must be percent-encoded (a space, a control character, #, or a byte above 0x7e)',
    );
  if (!QUERY_CHARS.test(query.slice(1))) return fail('the query holds a character that must be percent-encoded');
  if (/%(?![0-9A-Fa-f]{2})/.test(query)) return fail('the query holds an invalid percent-encoding');
  let decoded = '';
  for (let i = 0; i < rawPath.length; i++) {
    const ch = rawPath[i]!;
    if (ch !== '%') {
      decoded += ch;
      continue;
    }
    const hex = rawPath.slice(i + 1, i + 3);
    if (!HEX.test(hex)) return fail(`the path holds an invalid percent-encoding at '${rawPath.slice(i, i + 3)}'`);
    const code = parseInt(hex, 16);
    const c = String.fromCharCode(code);
    if (c === '/' || c === '\\')
      return fail(
        `the path holds an encoded '${c}' (%${hex.toUpperCase()}), which the backend may read as a separator`,
      );
    if (code < 0x20 || code === 0x7f)
      return fail(`the path holds an encoded control character (%${hex.toUpperCase()})`);
    decoded += UNRESERVED.test(c) ? c : `%${hex.toUpperCase()}`;
    i += 2;
  }
  const merged = opts.mergeSlashes === false ? decoded : decoded.replace(/\/{2,}/g, '/');
  const path = removeDotSegments(merged);
  if (path === undefined) return fail("the path climbs above the root with '..'");
  return { ok: true, path, query };
}

/**
 * RFC 3986 5.2.4 on an absolute path, by segments. Unlike a URL resolver, a `..` above the root is an error, not
 * silently dropped: no legitimate client sends one.
 */
function removeDotSegments(path: string): string | undefined {
  const segments = path.split('/').slice(1);
  const out: string[] = [];
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    const last = i === segments.length - 1;
    if (s === '.') {
      if (last) out.push('');
    } else if (s === '..') {
      if (out.length === 0) return undefined;
      out.pop();
      if (last) out.push('');
    } else {
      out.push(s);
    }
  }
  return '/' + out.join('/');
}

/**
 * Whether `path` is `prefix` or below it, on segment boundaries: `/admin` covers `/admin/x` and `/admin;v=1` (path
 * parameters, which Java servers strip before routing), not `/administrator`.
 */
export function pathUnder(path: string, prefix: string): boolean {
  if (prefix === '/') return true;
  const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix;
  return path === p || path.startsWith(p + '/') || path.startsWith(p + ';');
}
