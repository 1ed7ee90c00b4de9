// Regenerates README.md's operator table from the op registry: npm run ops-table
import fs from 'node:fs';
import { withOperatorTable } from '../src/tools/ops-table.js';

fs.writeFileSync('README.md', withOperatorTable(fs.readFileSync('README.md', 'utf8')));
console.log('README.md operator table updated');
