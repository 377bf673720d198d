/** Makes hostile input safe to echo in a one-line message: control characters escaped, length capped. */
export function printable(s: string, max = 80): string {
  const esc = s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
  return esc.length > max ? esc.slice(0, max) + '...' : esc;
}
