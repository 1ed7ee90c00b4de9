// `npm start`: the main job on a fresh machine — build the bundled example for the best device present, run it once,
// then benchmark it (trtexec-style summary).
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { BACKENDS } from '../backends/index.js';
import { loadOnnx } from '../onnx/reader.js';
import { build } from '../build/builder.js';
import { Engine } from '../runtime/engine.js';
import { bench, benchInputs, engineInputs } from '../tools/bench.js';
import { formatBenchSummary } from '../tools/bench-format.js';
import { progressBar } from './options.js';
import { summarizeOutputs, fmt } from './format.js';

const EXAMPLE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../examples/tiny-cnn.onnx');

/** The first backend (in priority order: CUDA before CPU) that can run here, with the reasons of those skipped. */
export function bestDevice(): { device: string; skipped: string[] } {
  const skipped: string[] = [];
  for (const b of BACKENDS) {
    const a = b.availability();
    if (a.ok) return { device: b.name, skipped };
    skipped.push(`${b.name}: ${(a.reason ?? 'unavailable').split('\n')[0].replace(/\s*Searched:?$/, '')}`);
  }
  return { device: 'cpu', skipped };
}

export function startCommand(): Command {
  return new Command('start')
    .description('build the bundled example for the best device here, run it, and benchmark it')
    .option('--model <path>', 'model to use instead of the bundled example', EXAMPLE)
    .option('--duration <s>', 'benchmark duration in seconds', (v) => Number(v), 1)
    .action(async (o) => {
      const { device, skipped } = bestDevice();
      for (const s of skipped) console.log(`(skipping ${s})`);
      const t0 = performance.now();
      const plan = await build(await loadOnnx(o.model), { device, buildCommand: `kiln build --onnx ${o.model} --device ${device}` });
      const engine = await Engine.load(plan);
      const buildMs = performance.now() - t0;
      const feeds = benchInputs(engineInputs(engine), { seed: 1 });
      const first = await engine.createContext().run(feeds);
      console.log(`Model ${path.relative(process.cwd(), o.model)} built for '${device}' (${plan.header.device.name}) in ${fmt(buildMs)} ms: ${plan.header.optimizer.nodesBefore} nodes -> ${plan.header.layers.length} layers.`);
      console.log(summarizeOutputs(first));
      console.log(`\nkiln bench --onnx ${path.relative(process.cwd(), o.model)} --device ${device} --duration ${o.duration}`);
      const bar = progressBar('benchmark');
      const { summary } = await bench(engine, feeds, {
        durationS: o.duration,
        onProgress: (phase, el, total, n) => bar.update(Math.min(Math.round(el), Math.round(total)), Math.max(1, Math.round(total)), `${phase}: ${n} queries`),
      }).finally(() => bar.stop());
      console.log(formatBenchSummary(summary));
      engine.dispose();
    });
}
