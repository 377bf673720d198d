import { MtlsError } from '../errors.js';

/** --color auto|always|never; auto means a terminal on stdout and no NO_COLOR (https://no-color.org). */
export function useColor(when: string | undefined, stream: NodeJS.WriteStream = process.stdout): boolean {
  if (when === 'always') return true;
  if (when === 'never') return false;
  if (when !== undefined && when !== 'auto')
    throw new MtlsError('USAGE', `--color '${when}' must be auto, always or never`);
  return stream.isTTY === true && !process.env['NO_COLOR'];
}

const sgr = (on: boolean, code: string) => (s: string) => (on ? `\x1b[${code}m${s}\x1b[0m` : s);

/** ANSI styles that are identity functions when color is off. */
export function paint(on: boolean) {
  return {
    bold: sgr(on, '1'),
    dim: sgr(on, '2'),
    red: sgr(on, '31'),
    green: sgr(on, '32'),
    yellow: sgr(on, '33'),
    blue: sgr(on, '34'),
    magenta: sgr(on, '35'),
    cyan: sgr(on, '36'),
  };
}
