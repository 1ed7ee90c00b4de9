import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { inspectModel, formatSummary } from '../tools/inspect.js';

export function inspectCommand(): Command {
  return new Command('inspect')
    .description('summarize a model: inputs, outputs, opsets, ops, weights, and what Kiln cannot run')
    .argument('<model>', 'ONNX model file')
    .option('--json', 'print JSON')
    .action(async (file: string, o) => {
      const s = inspectModel(await loadOnnx(file));
      console.log(o.json ? JSON.stringify(s, null, 2) : formatSummary(s));
      if (s.unsupported.length) process.exitCode = 2;
    });
}
