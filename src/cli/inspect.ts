import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { inspectModel, formatSummary } from '../tools/inspect.js';
import { formatPlan } from '../tools/inspect-plan.js';
import { readPlanFile } from '../build/plan.js';
import { isPlanFile } from '../runtime/engine.js';

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('summarize a model (inputs, outputs, opsets, ops, weights, unsupported ops) or a plan (--layers for per-layer info)')
    .argument('<file>', 'ONNX model or Kiln plan')
    .option('--layers', 'for plans: one row per layer (fused ops, tactic, precision, shapes, weights, workspace)')
    .option('--json', 'print JSON')
    .action(async (file: string, o) => {
      if (isPlanFile(file)) {
        const { header } = await readPlanFile(file);
        console.log(o.json ? JSON.stringify(o.layers ? header : { ...header, layers: undefined }, null, 2) : formatPlan(header, !!o.layers));
        return;
      }
      const s = inspectModel(await loadOnnx(file));
      console.log(o.json ? JSON.stringify(s, null, 2) : formatSummary(s));
      if (s.unsupported.length) process.exitCode = 2;
    });
}
