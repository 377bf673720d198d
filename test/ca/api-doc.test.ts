/** docs/ca-api.yaml describes every route `mtls ca serve` answers, and no route it does not (issue 15). */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import YAML from 'yaml';
import { API_ROUTES } from '../../src/ca/service.js';
import { ROOT } from '../helpers/pki.js';

it('the OpenAPI document and the service have the same routes', () => {
  const doc = YAML.parse(fs.readFileSync(path.join(ROOT, 'docs', 'ca-api.yaml'), 'utf8')) as {
    openapi: string;
    paths: Record<string, unknown>;
  };
  assert.match(doc.openapi, /^3\.1\./);
  assert.deepEqual(Object.keys(doc.paths).sort(), [...API_ROUTES].sort());
});
