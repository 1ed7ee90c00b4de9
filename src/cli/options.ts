// Option groups shared by commands, so a flag means the same everywhere (build, bench, compare...).
import { Command, Option } from 'commander';
import cliProgress from 'cli-progress';
import { InputError } from '../ir/errors.js';
import { parseShapes } from '../tools/inputs.js';
import { parseLayerPrecisions, type Precision } from '../passes/precision.js';
import type { BuildOptions } from '../build/builder.js';
import type { ShapeProfile } from '../build/plan.js';
import type { QuantizeOptions } from '../tools/quantize.js';

/** The flags of `kiln build` (also accepted by commands that build first). */
export function addBuildOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--device <device>', 'device to build for: cpu, cuda, or cuda:N for the N-th GPU').default('cpu'))
    .option('--fp16', 'allow fp16 layers (sensitive layers stay fp32)')
    .option('--bf16', 'allow bf16 layers')
    .option('--tf32', 'allow TF32 math for fp32 layers (CUDA)')
    .option('--strongly-typed', 'obey the model\'s types exactly')
    .option('--layer-precisions <spec>', 'pin layers, e.g. encoder.0.attn:fp32,Softmax:fp32')
    .option('--shapes <spec>', 'static input shapes, e.g. input:1x3x224x224')
    .option('--min-shapes <spec>', 'shape profile minimum, e.g. input:1x3x224x224')
    .option('--opt-shapes <spec>', 'shape profile optimum (kernels are chosen for it)')
    .option('--max-shapes <spec>', 'shape profile maximum')
    .option('--timing-cache <file>', 'read and update a tactic timing cache')
    .option('--strict', 'fail when a layer would fall back to the CPU on the chosen device')
    .option('--dump-ir <stage>', 'write the graph after an optimizer stage (or "all") as .onnx and .txt')
    .option('--dump-dir <dir>', 'where --dump-ir writes', '.');
}

export function buildOptionsFrom(o: Record<string, any>, argv: string[] = process.argv): BuildOptions {
  const flags = ['fp16', 'bf16', 'tf32', 'stronglyTyped'].filter((k) => o[k]);
  if (flags.length > 1) throw new InputError(`choose one precision flag, got ${flags.map((f) => `--${f.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(' and ')}`);
  const precision = (o.fp16 ? 'fp16' : o.bf16 ? 'bf16' : o.tf32 ? 'tf32' : o.stronglyTyped ? 'strongly-typed' : 'fp32') as Precision;
  const opts: BuildOptions = {
    device: o.device, precision, layerPrecisions: parseLayerPrecisions(o.layerPrecisions), timingCache: o.timingCache,
    dumpIr: o.dumpIr, dumpDir: o.dumpDir, strict: !!o.strict, buildCommand: `kiln ${argv.slice(2).join(' ')}`,
  };
  if (o.shapes) opts.shapes = Object.fromEntries(parseShapes(o.shapes));
  if (o.minShapes || o.optShapes || o.maxShapes) {
    if (!o.minShapes || !o.optShapes || !o.maxShapes) throw new InputError('a shape profile needs all of --min-shapes, --opt-shapes and --max-shapes');
    const [mn, op, mx] = [o.minShapes, o.optShapes, o.maxShapes].map(parseShapes);
    const prof: ShapeProfile = {};
    for (const [name, min] of mn) {
      const opt = op.get(name), max = mx.get(name);
      if (!opt || !max) throw new InputError(`input '${name}' is in --min-shapes but missing from --opt-shapes or --max-shapes`);
      prof[name] = { min, opt, max };
    }
    opts.profiles = [prof];
  }
  return opts;
}

/** `--int8` and its calibration flags: quantize in memory with `kiln quantize`'s int8 defaults, then build. */
export function addInt8Options(cmd: Command): Command {
  return cmd
    .option('--int8', 'quantize to int8 (W8A8, weights per channel) in memory first, as `kiln quantize` would, then build')
    .option('--calibration-data <path>', 'with --int8: .npz/.npy keyed by input name (samples on axis 0), or a folder of them')
    .option('--calibration-random [samples]', 'with --int8: calibrate on seeded random inputs (poor scales; smoke tests only)');
}

/** The quantization to run before building, or undefined without --int8. */
export function int8OptionsFrom(o: Record<string, any>): QuantizeOptions | undefined {
  if (!o.int8) {
    if (o.calibrationData || o.calibrationRandom) throw new InputError('--calibration-data and --calibration-random only apply with --int8.', { hint: 'Add --int8, or drop the calibration flag.' });
    return undefined;
  }
  const samples = randomCalibrationSamples(o);
  if (!o.calibrationData && samples === undefined) {
    throw new InputError('--int8 needs calibration inputs to choose activation scales.', { hint: 'Pass --calibration-data <file.npz|folder>, or --calibration-random for a smoke test.' });
  }
  return { mode: 'int8', calibrationData: o.calibrationData, calibrationRandom: samples };
}

/** `--calibration-random [n]` (64 samples when no count is given), which excludes `--calibration-data`. */
export function randomCalibrationSamples(o: Record<string, any>): number | undefined {
  if (o.calibrationData && o.calibrationRandom) throw new InputError('pass either --calibration-data or --calibration-random, not both.');
  if (o.calibrationRandom === undefined) return undefined;
  const samples = o.calibrationRandom === true ? 64 : Number(o.calibrationRandom);
  if (!(Number.isInteger(samples) && samples > 0)) throw new InputError(`--calibration-random: '${o.calibrationRandom}' is not a positive integer.`);
  return samples;
}

/** A progress bar on a TTY; silent otherwise. */
export function progressBar(label: string): { update(done: number, total: number, item: string): void; stop(): void } {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar({ format: `${label} [{bar}] {value}/{total} {item}`, stream: process.stderr, clearOnComplete: true }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update(done, total, item) {
      if (!started) { bar.start(total, 0, { item: '' }); started = true; }
      bar.update(done, { item: item.slice(0, 40) });
    },
    stop() { if (started) bar.stop(); },
  };
}
