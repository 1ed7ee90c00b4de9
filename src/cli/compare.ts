// `kiln compare MODEL.onnx --runner kiln-ref --runner kiln-cpu --fp16 ...` (Polygraphy's `run`).
import { Command } from 'commander';
import { loadOnnx } from '../onnx/reader.js';
import { InputError } from '../ir/errors.js';
import { parseLayerPrecisions, type Precision } from '../passes/precision.js';
import { parseShapes } from '../tools/inputs.js';
import { listRunners } from '../tools/runners.js';
import {
  compareModel, compareScript, formatCompareReport, parseNumber, parsePerOutput, parseStat, type CompareOptions, type Range,
} from '../tools/compare.js';

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** `0,1` for every input, `name:[lo,hi]` or `name:lo,hi` for one. */
export function parseRanges(specs: string[]): CompareOptions['inputRange'] {
  if (!specs.length) return undefined;
  const out: NonNullable<CompareOptions['inputRange']> = {};
  for (const spec of specs) {
    const m = /^(?:(.+?):)?\[?\s*(-?[\d.eE+-]+)\s*,\s*(-?[\d.eE+-]+)\s*\]?$/.exec(spec.trim());
    const lo = Number(m?.[2]), hi = Number(m?.[3]);
    if (!m || !Number.isFinite(lo) || !Number.isFinite(hi) || lo > hi) {
      throw new InputError(`--input-range: bad range '${spec}'.`, { hint: 'Use LO,HI for every input or NAME:[LO,HI] for one, e.g. --input-range 0,1 --input-range ids:[0,100].' });
    }
    const r: Range = [lo, hi];
    if (m[1]) (out.byInput ??= {})[m[1]] = r;
    else out.default = r;
  }
  return out;
}

/** The comparison flags shared by `compare` and `debug`. */
export function addCompareOptions(cmd: Command): Command {
  return cmd
    .option('--atol <value>', 'absolute tolerance, default 1e-5; OUTPUT:VALUE for one output (repeatable, or comma separated)', collect, [])
    .option('--rtol <value>', 'relative tolerance, default 1e-5; OUTPUT:VALUE for one output (repeatable)', collect, [])
    .option('--check-error-stat <stat>', 'elemwise (default) | max | mean | median | quantile; OUTPUT:STAT for one output', collect, [])
    .option('--error-quantile <q>', 'quantile for --check-error-stat quantile (default 0.99); OUTPUT:Q for one output', collect, [])
    .option('--input-range <range>', 'range of random inputs: LO,HI or NAME:[LO,HI] (repeatable)', collect, [])
    .option('--load-inputs <file>', 'inputs from .npy/.npz/.json (repeatable)', collect, [])
    .option('--seed <n>', 'seed for random inputs', (v) => Number(v), 1)
    .option('--shapes <spec>', 'shapes for dynamic inputs, e.g. input:1x3x224x224');
}

export function compareOptionsFrom(o: Record<string, any>): CompareOptions {
  const flags = ['fp16', 'bf16'].filter((k) => o[k]);
  if (flags.length > 1) throw new InputError('choose one of --fp16 and --bf16');
  return {
    atol: parsePerOutput(o.atol, '--atol', parseNumber, 'a non-negative number'),
    rtol: parsePerOutput(o.rtol, '--rtol', parseNumber, 'a non-negative number'),
    stat: parsePerOutput(o.checkErrorStat, '--check-error-stat', parseStat, 'elemwise|max|mean|median|quantile'),
    quantile: parsePerOutput(o.errorQuantile, '--error-quantile', (s) => { const q = parseNumber(s); return q !== undefined && q <= 1 ? q : undefined; }, 'a number in [0, 1]'),
    inputRange: parseRanges(o.inputRange ?? []),
    loadInputs: o.loadInputs?.length ? o.loadInputs : undefined,
    seed: o.seed,
    shapes: o.shapes ? Object.fromEntries(parseShapes(o.shapes)) : undefined,
    precision: (o.fp16 ? 'fp16' : o.bf16 ? 'bf16' : undefined) as Precision | undefined,
    layerPrecisions: o.layerPrecisions ? parseLayerPrecisions(o.layerPrecisions) : undefined,
  };
}

export function compareCommand(): Command {
  return addCompareOptions(new Command('compare')
    .description('run a model on several runners with the same inputs and compare every output (like polygraphy run)')
    .argument('[model]', 'ONNX model')
    .option('--runner <name>', 'kiln-ref | kiln-cpu[:fp16|:bf16] | kiln-cuda | onnxruntime (repeatable; the first is the reference; default kiln-ref and kiln-cpu)', collect, [])
    .option('--load-engine <plan>', 'also run a Kiln plan (repeatable)', collect, [])
    .option('--fp16', 'build kiln-cpu/kiln-cuda runners in fp16')
    .option('--bf16', 'build kiln-cpu/kiln-cuda runners in bf16')
    .option('--layer-precisions <spec>', 'pin layers of kiln-cpu builds, e.g. fc1:fp32')
    .option('--mark-all', 'compare every intermediate tensor and name the first layer that diverges')
    .option('--save-outputs <file>', 'save the first runner\'s outputs (.npz or .json) as golden outputs')
    .option('--load-outputs <file>', 'compare every runner against golden outputs (.npz or .json)')
    .option('--save-inputs <file>', 'save the inputs used (.npz or .json)')
    .option('--gen-script', 'print the equivalent TypeScript program (public API only) instead of running')
    .option('--list-runners', 'list runners and whether they can run here')
    .option('--json', 'print the report as JSON'))
    .action(async (modelPath: string | undefined, o) => {
      if (o.listRunners) {
        for (const r of await listRunners()) console.log(`${r.name.padEnd(12)} ${r.available ? 'available' : `unavailable: ${r.reason}`}`);
        return;
      }
      const runners: string[] = [...o.runner, ...o.loadEngine.map((p: string) => `plan:${p}`)];
      if (!modelPath && !o.loadEngine.length) throw new InputError('give an ONNX model (or --load-engine PLAN).', { hint: 'kiln compare model.onnx --runner kiln-ref --runner kiln-cpu' });
      const opts: CompareOptions = {
        ...compareOptionsFrom(o), runners: runners.length ? runners : undefined, markAll: o.markAll,
        saveOutputs: o.saveOutputs, loadOutputs: o.loadOutputs, saveInputs: o.saveInputs,
      };
      if (o.genScript) {
        console.log(compareScript(modelPath ?? '', opts));
        return;
      }
      const model = modelPath ? await loadOnnx(modelPath) : undefined;
      const report = await compareModel(model, opts);
      console.log(o.json ? JSON.stringify(report, null, 2) : formatCompareReport(report, { markAll: o.markAll }));
      if (!report.passed) process.exitCode = 1;
    });
}
