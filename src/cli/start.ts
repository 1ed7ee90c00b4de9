// `npm start`: the main job on a fresh machine — load the bundled example, run it, print outputs and timing.
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { InferenceSession } from '../runtime/session.js';
import { makeInputs } from '../tools/inputs.js';
import { summarizeOutputs, fmt } from './format.js';

const EXAMPLE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples/tiny-cnn.onnx');

export function startCommand(): Command {
  return new Command('start')
    .description('run the bundled example model and report its latency')
    .option('--model <path>', 'model to run instead of the bundled example', EXAMPLE)
    .option('--iterations <n>', 'timed runs', (v) => Number(v), 20)
    .action(async (o) => {
      const t0 = performance.now();
      const session = await InferenceSession.create(o.model);
      const loadMs = performance.now() - t0;
      const feeds = makeInputs(session.inputMetadata, { random: true, seed: 1 });
      const first = await session.run(feeds);
      console.log(`Model ${path.relative(process.cwd(), o.model)} loaded in ${fmt(loadMs)} ms on provider '${session.executionProvider}'.`);
      console.log(summarizeOutputs(first));
      const times: number[] = [];
      for (let i = 0; i < o.iterations; i++) {
        const s = performance.now();
        await session.run(feeds);
        times.push(performance.now() - s);
      }
      times.sort((a, b) => a - b);
      const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
      console.log(`\nLatency over ${times.length} runs: min ${fmt(times[0])} ms, median ${fmt(q(0.5))} ms, p90 ${fmt(q(0.9))} ms, max ${fmt(times[times.length - 1])} ms`);
      await session.release();
    });
}
