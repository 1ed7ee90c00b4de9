import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import { InferenceSession } from '../runtime/session.js';
import { makeInputs } from '../tools/inputs.js';
import { encodeNpy } from '../tools/npy.js';
import { toTensorData, Tensor } from '../runtime/tensor.js';
import { summarizeOutputs } from './format.js';

const collect = (v: string, prev: string[]) => [...prev, v];

export function runCommand(): Command {
  return new Command('run')
    .description('run a model once and print (or save) its outputs')
    .requiredOption('--model <path>', 'ONNX model file')
    .option('--input <name=file.npy>', 'input data from .npy (repeatable), or one .npz holding all inputs', collect, [])
    .option('--random', 'seeded random data for inputs not given with --input')
    .option('--seed <n>', 'seed for --random', (v) => Number(v), 1)
    .option('--shapes <spec>', 'shapes for dynamic inputs, e.g. input:1x3x224x224')
    .option('--output-dir <dir>', 'write each output as <dir>/<name>.npy')
    .option('--provider <name>', 'execution provider', 'cpu')
    .action(async (o) => {
      const session = await InferenceSession.create(o.model, { executionProviders: [o.provider] });
      const feeds = makeInputs(session.inputMetadata, { files: o.input, random: o.random, seed: o.seed, shapes: o.shapes });
      const t0 = performance.now();
      const out = await session.run(feeds);
      const ms = performance.now() - t0;
      console.log(summarizeOutputs(out));
      console.log(`\nran in ${ms.toFixed(2)} ms on ${session.executionProvider}`);
      if (o.outputDir) {
        fs.mkdirSync(o.outputDir, { recursive: true });
        for (const [name, v] of Object.entries(out)) {
          if (!(v instanceof Tensor)) continue;
          const file = path.join(o.outputDir, `${name.replace(/[^\w.-]/g, '_')}.npy`);
          fs.writeFileSync(file, encodeNpy(toTensorData(v)));
          console.log(`wrote ${file}`);
        }
      }
      await session.release();
    });
}
