import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { build, defaultPlanPath } from '../build/builder.js';
import { addBuildOptions, addInt8Options, buildOptionsFrom, int8OptionsFrom, progressBar } from './options.js';
import { quantizeModel } from '../tools/quantize.js';
import { formatBytes } from '../tools/inspect.js';

export function buildCommand(): Command {
  return addInt8Options(addBuildOptions(new Command('build')
    .description('build an ONNX model into an optimized plan for a device')
    .requiredOption('--onnx <path>', 'ONNX model file')
    .option('--save-engine <path>', 'where to write the plan (default: next to the model, .plan)')))
    .action(async (o) => {
      const int8 = int8OptionsFrom(o);
      let model = await loadOnnx(o.onnx);
      if (int8) {
        if (int8.calibrationRandom) console.error(`warning: calibrating on ${int8.calibrationRandom} random samples; the scales will not fit real data.`);
        const q = quantizeModel(model, int8);
        for (const w of q.report.warnings) console.error(`warning: ${w}`);
        const worst = q.report.outputs.reduce((a, x) => Math.min(a, x.cosine), 1);
        console.log(`Quantized ${q.report.layers.length} layers to int8 (${q.report.calibrationSamples} calibration samples); output cosine vs fp32 ${worst.toFixed(4)} on ${q.report.evalSource}`);
        model = q.model;
      }
      const bar = progressBar('timing layers');
      const opts = buildOptionsFrom(o);
      const plan = await build(model, { ...opts, onProgress: (d, t, l) => bar.update(d, t, l) });
      bar.stop();
      const out = o.saveEngine ?? defaultPlanPath(o.onnx);
      await plan.save(out);
      const h = plan.header;
      const m = h.memory;
      console.log(`Built ${o.onnx} for ${h.device.backend} (${h.device.name}), precision ${h.precision}, in ${(h.buildMs / 1000).toFixed(2)} s`);
      console.log(`  nodes: ${h.optimizer.nodesBefore} -> ${h.optimizer.nodesAfter} layers`);
      console.log(`  weights ${formatBytes(m.weightBytes)}, activation arena ${formatBytes(m.arenaBytes)} (lower bound ${formatBytes(m.lowerBound)})`);
      console.log(`  plan: ${out} (${formatBytes(plan.bytes.length)})`);
    });
}
