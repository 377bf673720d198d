#!/usr/bin/env node
import { main } from '../dist/src/cli/main.js';

const code = await main(process.argv.slice(2));
// A failed command ends here, whatever it left open (a watcher, a worker, a timer): it must never linger.
if (code !== 0) process.exit(code);
process.exitCode = code;
