import pino, { type Logger } from 'pino';

/** JSON lines on stdout: time, level, listener, event, identity, decision, reason. Never key material. */
export function createLogger(
  level: string,
  destination: pino.DestinationStream = pino.destination({ fd: 1, sync: false }),
): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    destination,
  );
}
