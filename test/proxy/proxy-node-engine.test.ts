/**
 * The TCP-mode proxy tests of proxy.test.ts again, on Node's TLS socket (`--engine node`); proxy.test.ts runs
 * them on the native engine, which a TCP listener uses by default.
 */
process.env['MTLS_TEST_PROXY_ENGINE'] = 'node';
await import('./proxy.test.js');
