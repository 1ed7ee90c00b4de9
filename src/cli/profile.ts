import fs from 'node:fs';
import { Command } from 'commander';
import { InputError } from '../ir/errors.js';
import { addEngineOptions, engineAndInputs } from './bench.js';
import { traceInference } from '../tools/profile.js';
import { profiler } from '../runtime/profiler.js';
import { benchInputs, engineInputs } from '../tools/bench.js';

export function profileCommand(): Command {
  return addEngineOptions(new Command('profile')
    .description('record one inference (after warm-up) as a Chrome trace: host phases, every layer, user ranges (open in Perfetto)')
    .option('--output <file>', 'trace file to write', 'trace.json')
    .option('--warm-up-runs <n>', 'inferences before the recorded one', (v) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n) || n < 0) throw new InputError(`--warm-up-runs needs a non-negative integer, got '${v}'.`);
      return n;
    }, 3))
    .action(async (o) => {
      const { engine, feeds, source } = await engineAndInputs(o);
      const meta = engineInputs(engine);
      const how = o.loadInputs.length ? 'load inputs' : o.zeros ? 'zero inputs' : 'random inputs';
      // input preparation is recorded as a user range, as an application would mark its preprocessing
      const trace = await traceInference(engine, feeds, {
        warmUpRuns: o.warmUpRuns, model: source,
        prepare: () => profiler.range(how, () => benchInputs(meta, { loadInputs: o.loadInputs, zeros: o.zeros, seed: o.seed, shapes: o.shapes })),
      });
      fs.writeFileSync(o.output, JSON.stringify(trace));
      const layers = trace.traceEvents.filter((e) => e.cat === 'layer');
      const inf = trace.traceEvents.find((e) => e.name === 'inference');
      console.log(`Traced one inference of ${source} on ${engine.header.device.backend}: ${layers.length} layers, ${((inf?.dur ?? 0) / 1000).toFixed(3)} ms.`);
      const top = [...layers].sort((a, b) => b.dur! - a.dur!).slice(0, 5);
      for (const l of top) console.log(`  ${(l.dur! / 1000).toFixed(3).padStart(10)} ms  ${l.name}`);
      console.log(`Wrote ${o.output} (${trace.traceEvents.length} events); open it in https://ui.perfetto.dev or chrome://tracing.`);
      engine.dispose();
    });
}
