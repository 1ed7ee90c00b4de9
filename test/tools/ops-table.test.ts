import { describe, it, expect } from 'vitest';
import fs from 'node:fs';
import { withOperatorTable } from '../../src/tools/ops-table.js';

describe('README operator table', () => {
  it('is the table generated from the op registry (run `npm run ops-table` after adding ops)', () => {
    const readme = fs.readFileSync('README.md', 'utf8');
    expect(withOperatorTable(readme)).toBe(readme);
  });
});
