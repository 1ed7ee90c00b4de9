// `kiln quantize` (ModelOpt's ONNX PTQ): write an explicit Q/DQ ONNX model and report the accuracy cost.
import fs from 'node:fs';
import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { saveOnnx } from '../onnx/writer.js';
import { InputError } from '../ir/errors.js';
import { formatQuantizeReport, quantizeModel, type QuantizeOptions } from '../tools/quantize.js';
import { imageCalibrationSet, type Feeds } from '../quant/data.js';
import { preprocessAll } from '../pipeline/pipeline.js';
import { TensorData } from '../ir/tensor.js';
import { randomCalibrationSamples } from './options.js';
import type { Graph } from '../ir/graph.js';

const list = (v: string | undefined) => (v ? v.split(',').map((s) => s.trim()).filter(Boolean) : undefined);

function number(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InputError(`${flag}: '${v}' is not a number.`);
  return n;
}

export function quantizeCommand(): Command {
  return new Command('quantize')
    .description('post-training quantization to an explicit QuantizeLinear/DequantizeLinear ONNX model (int8, fp8, int4 weight-only)')
    .requiredOption('--onnx <file>', 'ONNX model to quantize')
    .option('--mode <mode>', 'int8 (W8A8), fp8 (float8e4m3fn W8A8) or int4 (weight-only, blocked)', 'int8')
    .option('-o, --output <file>', 'where to write the Q/DQ model (default: <model>.quant.onnx)')
    .option('--calibration-data <path>', '.npz/.npy keyed by input name (samples on axis 0), or a folder of them; with --preprocess, a folder (or glob) of images')
    .option('--preprocess <spec.json>', 'read --calibration-data (and --eval-data) as images through this pipeline spec')
    .option('--calibration-random [samples]', 'calibrate on seeded random inputs instead (poor scales; smoke tests only)')
    .option('--eval-data <path>', 'inputs for the accuracy report (default: hold out the last fifth of the calibration data)')
    .option('--calibrator <kind>', 'max, entropy (KL over 2048-bin histograms) or percentile', 'max')
    .option('--percentile <p>', 'percentile for --calibrator percentile', '99.99')
    .option('--per-tensor', 'one scale per weight instead of one per output channel')
    .option('--block-size <n>', 'int4 block size along the reduction axis', '128')
    .option('--no-awq', 'int4: plain round-to-nearest, no activation-aware scale search')
    .option('--activation-type <t>', 'int8: int8 activations, symmetric (default; what the GPU int8 kernels take); uint8: zero point 0 on non-negative tensors (onnxruntime\'s default, integer ReLU layers there)')
    .option('--smooth-alpha <a>', 'SmoothQuant for MatMul/Gemm before W8A8 (e.g. 0.5)')
    .option('--op-types-to-quantize <ops>', 'comma-separated op types (default Conv,MatMul,Gemm; int4: MatMul,Gemm); Add: Q/DQ on both inputs of residual Adds (see --quantize-residual)')
    .option('--quantize-residual', 'int8/fp8: also quantize both inputs of residual Adds (two activations, one from a quantized layer: TensorRT\'s placement; the GPU build then keeps ResNet\'s residual stream int8)')
    .option('--nodes-to-exclude <names>', 'comma-separated node names to leave in float')
    .option('--exclude-patterns <regexes>', 'comma-separated regular expressions over node names to leave in float')
    .option('--batch-size <n>', 'samples per calibration run', '32')
    .option('--seed <n>', 'seed for random calibration data', '1')
    .option('--json [file]', 'print the report as JSON (or write it to a file)')
    .action(async (o) => {
      const randomSamples = randomCalibrationSamples(o);
      const opts: QuantizeOptions = {
        mode: o.mode, calibrationData: o.calibrationData, calibrationRandom: randomSamples, evalData: o.evalData,
        calibrator: o.calibrator, percentile: number(o.percentile, '--percentile'), perChannel: !o.perTensor,
        blockSize: number(o.blockSize, '--block-size'), awq: o.awq, activationType: o.activationType, smoothAlpha: number(o.smoothAlpha, '--smooth-alpha'),
        opTypesToQuantize: list(o.opTypesToQuantize), quantizeResidual: !!o.quantizeResidual, nodesToExclude: list(o.nodesToExclude), excludePatterns: list(o.excludePatterns),
        batchSize: number(o.batchSize, '--batch-size'), seed: number(o.seed, '--seed'),
      };
      if (randomSamples !== undefined) console.error(`warning: calibrating on ${randomSamples} random samples; the scales will not fit real data.`);
      const onnx = await loadOnnx(o.onnx);
      if (o.preprocess) {
        if (!o.calibrationData) throw new InputError('--preprocess reads images from --calibration-data DIR; pass that too.');
        opts.calibrationData = await imageFeeds(o.preprocess, o.calibrationData, onnx.graph);
        if (o.evalData) opts.evalData = await imageFeeds(o.preprocess, o.evalData, onnx.graph);
      }
      const { model, report } = quantizeModel(onnx, opts);
      const output = o.output ?? o.onnx.replace(/\.onnx$/, '') + '.quant.onnx';
      await saveOnnx(model, output);
      if (o.json === true) console.log(JSON.stringify(report, null, 2));
      else {
        console.log(formatQuantizeReport(report));
        if (typeof o.json === 'string') fs.writeFileSync(o.json, JSON.stringify(report, null, 2));
      }
      console.error(`Wrote ${output}`);
    });
}

/** Images from a folder or glob through the pipeline spec, as the model's calibration feeds; unreadable ones skipped. */
async function imageFeeds(spec: string, source: string, g: Graph): Promise<Feeds> {
  const { tensor, names, errors } = await preprocessAll(spec, source);
  for (const e of errors) console.error(`warning: skipped ${e.message.split('\n')[0]}`);
  console.error(`Read ${names.length} images from ${source} through ${spec}.`);
  return imageCalibrationSet(new TensorData(tensor.type, [...tensor.dims], tensor.data as Float32Array), g, `${source} (through ${spec})`);
}
