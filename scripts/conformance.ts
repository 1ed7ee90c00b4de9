// Quick conformance run over a subset: `npx tsx scripts/conformance.ts [regex] [--failures-only]`.
// Matches the regex against the case name and its tested operator.
import { listCases, runCase, isDefaultDomain } from '../test/conformance/cases.js';
import { skipReason } from '../test/conformance/skip.js';

const args = process.argv.slice(2);
const pattern = new RegExp(args.find((a) => !a.startsWith('--')) ?? '.', 'i');
const failuresOnly = args.includes('--failures-only');
const cases = listCases().filter((c) => pattern.test(c.name) || pattern.test(c.testedOp));
let pass = 0, fail = 0, skip = 0;
for (const c of cases) {
  const reason = skipReason(c);
  if (reason) { skip++; if (!failuresOnly) console.log(`SKIP ${c.name}: ${reason}`); continue; }
  let r: { ok: boolean; error?: string };
  try { r = await runCase(c); } catch (e) { r = { ok: false, error: `threw ${(e as Error).stack?.split('\n').slice(0, 6).join('\n')}` }; }
  if (r.ok) { pass++; if (!failuresOnly) console.log(`PASS ${c.name}`); }
  else { fail++; console.log(`FAIL ${c.name}${isDefaultDomain(c) ? '' : ' (non-default domain)'}\n  ${r.error?.replace(/\n/g, '\n  ')}`); }
}
console.log(`\n${pass} passed, ${fail} failed, ${skip} skipped (of ${cases.length} cases matching ${pattern})`);
