// The ONNX backend conformance suite on the reference kernels. Every case passes or is in skip.ts with a reason.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs';
import { DATA_DIR, listCases, runCase, isDefaultDomain } from './cases.js';
import { skipReason } from './skip.js';

const cases = listCases();
const hasData = fs.existsSync(DATA_DIR) && cases.length > 0;

describe.skipIf(!hasData)('ONNX backend conformance (cpu reference)', () => {
  let passed = 0, defaultDomainPassed = 0;
  afterAll(() => {
    const dd = cases.filter(isDefaultDomain).length;
    console.log(`conformance: ${passed} of ${cases.length} cases passed; default domain ${defaultDomainPassed} of ${dd} (${((100 * defaultDomainPassed) / dd).toFixed(1)}%)`);
  });
  for (const c of cases) {
    const reason = skipReason(c);
    it.skipIf(!!reason)(`${c.name}${reason ? ` — skipped: ${reason}` : ''}`, async () => {
      const r = await runCase(c);
      expect(r.ok ? '' : r.error).toBe('');
      passed++;
      if (isDefaultDomain(c)) defaultDomainPassed++;
    });
  }
});

if (!hasData) {
  describe('ONNX backend conformance', () => {
    it.skip(`conformance data not found at ${DATA_DIR}: put ONNX's backend test data (onnx/backend/test/data/{node,simple} and cases.tsv) there or set KILN_ONNX_BACKEND_DATA`, () => {});
  });
}
