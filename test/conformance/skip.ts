// The one skip list of the conformance suite. Every entry says why. Cases of domains outside issue 2's scope
// (ai.onnx.ml, ai.onnx.preview.training, ai.onnx.preview) are skipped by rule, below.
import type { CaseInfo } from './cases.js';

export const SKIPS: { case: string | RegExp; reason: string }[] = [
];

export function skipReason(c: CaseInfo): string | undefined {
  if (c.opset === '-' || c.opTypes.some((o) => o.includes(':'))) return `uses a non-default domain (${c.otherOpsets}); out of scope for the core`;
  for (const s of SKIPS) if (typeof s.case === 'string' ? s.case === c.name : s.case.test(c.name)) return s.reason;
  return undefined;
}
