import fs from 'node:fs';
import { Command, Option } from 'commander';
import { InputError } from '../ir/errors.js';
import { addBuildOptions, buildOptionsFrom, progressBar } from './options.js';
import { bench, benchDevices, benchInputs, engineInputs, loadBenchEngine, parseDeviceList, type BenchOptions } from '../tools/bench.js';
import { parseDevice } from '../backends/index.js';
import { formatBenchSummary } from '../tools/bench-format.js';
import { formatLayerProfile, layerProfileJson, profileLayers } from '../tools/bench-layers.js';
import { formatPlan } from '../tools/inspect-plan.js';
import { addLlmBenchOptions, llmBenchAction } from './generate.js';
import { benchPipeline, formatPipelineBench } from '../tools/bench-pipeline.js';
import { Pipeline } from '../pipeline/pipeline.js';

const collect = (v: string, prev: string[]) => [...prev, v];
const int = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new InputError(`${flag} needs a non-negative integer, got '${v}'.`);
  return n;
};
const real = (flag: string) => (v: string) => {
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new InputError(`${flag} needs a non-negative number, got '${v}'.`);
  return n;
};

/** The engine and input flags shared by `kiln bench` and `kiln profile`. */
export function addEngineOptions(cmd: Command): Command {
  return addBuildOptions(cmd
    .option('--onnx <path>', 'ONNX model to build first (with the build flags below)')
    .option('--load-engine <path>', 'plan to load instead of building')
    .option('--save-engine <path>', 'with --onnx: also save the built plan')
    .option('--load-inputs <spec>', 'inputs from .npy files: name:file.npy[,name2:file2.npy] (repeatable), or one .npz', collect, [])
    .option('--zeros', 'zeros instead of seeded random values for inputs not loaded')
    .option('--seed <n>', 'seed for random inputs', int('--seed'), 1)
    .option('--threads <n>', 'CPU intra-op threads', int('--threads')));
}

/** Build or load the engine and make its inputs, with a build progress bar. */
export async function engineAndInputs(o: Record<string, any>) {
  const bar = progressBar('building: timing layers');
  const built = await loadBenchEngine({
    onnx: o.onnx, plan: o.loadEngine, saveEngine: o.saveEngine, threads: o.threads, cudaGraph: o.cudaGraph === false ? false : undefined,
    build: o.onnx ? { ...buildOptionsFrom(o), onProgress: (d, t, l) => bar.update(d, t, l) } : undefined,
  }).finally(() => bar.stop());
  const feeds = benchInputs(engineInputs(built.engine), { loadInputs: o.loadInputs, zeros: o.zeros, seed: o.seed, shapes: o.shapes });
  return { ...built, feeds };
}

export function benchCommand(): Command {
  return addEngineOptions(addLlmBenchOptions(new Command('bench'))
    .description('benchmark a model like trtexec: throughput, latency percentiles, enqueue/H2D/compute/D2H; per-layer profile')
    .option('--warm-up <ms>', 'warm-up time before timing', real('--warm-up'), 200)
    .option('--duration <s>', 'run at least this many seconds', real('--duration'), 3)
    .option('--iterations <n>', 'and at least this many inferences', int('--iterations'), 10)
    .option('--streams <n>', 'concurrent execution contexts of the engine', int('--streams'), 1)
    .option('--devices <list>', 'GPU indices to run on at once (e.g. 0,1): one engine per GPU, per-GPU and aggregate throughput')
    .option('--no-data-transfers', 'leave input/output transfers out of the timing')
    .option('--use-cuda-graph', 'capture the inference as a CUDA graph (cuda; the default there)')
    .option('--no-cuda-graph', 'do not use CUDA graphs (cuda)')
    .option('--use-spin-wait', 'spin instead of blocking while waiting for the device (cuda)')
    .option('--percentile <list>', 'percentiles to report', '90,95,99')
    .option('--export-times <file>', 'every inference\'s timestamps as JSON (trtexec --exportTimes)')
    .option('--json', 'print the summary as JSON on stdout')
    .option('--dump-profile', 'also run a separate profiled pass and print per-layer times')
    .option('--export-profile <file>', 'write the per-layer profile as JSON (trtexec --exportProfile)')
    .option('--dump-layer-info', 'print the plan\'s layer table (as `kiln inspect PLAN --layers`)')
    .addOption(new Option('--export-layer-info <file>', 'write the plan\'s layer info as JSON'))
    .option('--pipeline <spec.json>', 'end-to-end images/s: decode and preprocess images with this pipeline spec (then the model, if given)')
    .option('--images <dir|glob>', 'with --pipeline: the images (default: the spec\'s source)')
    .option('--pipeline-workers <n>', 'with --pipeline: worker threads (0: in the main thread)', int('--pipeline-workers'))
    .option('--prefetch <n>', 'with --pipeline: batches decoded ahead of the model (0: decode and inference take turns)', int('--prefetch'), 2)
    .option('--epochs <n>', 'with --pipeline: passes over the images', int('--epochs'), 1))
    .action(async (o) => {
      if (o.llm) return llmBenchAction(o);
      if (o.pipeline) return pipelineBench(o);
      if (o.useCudaGraph && o.cudaGraph === false) throw new InputError('choose one of --use-cuda-graph and --no-cuda-graph.');
      const percentiles = String(o.percentile).split(',').map((s) => Number(s.trim()));
      if (percentiles.some((p) => !(p >= 0 && p <= 100))) throw new InputError(`--percentile: expected numbers in [0, 100] separated by commas, got '${o.percentile}'.`);
      if (o.devices) return devicesBench(o, percentiles);
      const { engine, feeds, source } = await engineAndInputs(o);
      const out: Record<string, unknown> = {};
      const say = (text: string) => { if (!o.json) console.log(text); };
      if (o.dumpLayerInfo) {
        if (o.json) out.layerInfo = engine.header.layers;
        say(formatPlan(engine.header, true) + '\n');
      }
      if (o.exportLayerInfo) fs.writeFileSync(o.exportLayerInfo, JSON.stringify(engine.header.layers, null, 2));
      const bar = progressBar('benchmark');
      const opts: BenchOptions = {
        warmUpMs: o.warmUp, durationS: o.duration, iterations: o.iterations, streams: o.streams, dataTransfers: o.dataTransfers,
        percentiles, cudaGraph: o.useCudaGraph ? true : o.cudaGraph === false ? false : undefined, spinWait: !!o.useSpinWait, threads: o.threads,
        onProgress: (phase, el, total, n) => bar.update(Math.min(Math.round(el), Math.round(total)), Math.max(1, Math.round(total)), `${phase}: ${n} queries`),
      };
      const { summary, times } = await bench(engine, feeds, opts).finally(() => bar.stop());
      if (o.exportTimes) fs.writeFileSync(o.exportTimes, JSON.stringify(times, null, 2));
      say(`Model: ${source}`);
      say(formatBenchSummary(summary));
      if (o.dumpProfile || o.exportProfile) {
        const pbar = progressBar('profiling layers');
        const prof = await profileLayers(engine, feeds, {
          iterations: o.iterations, durationS: o.duration,
          onProgress: (el, total, n) => pbar.update(Math.min(Math.round(el), Math.round(total)), Math.max(1, Math.round(total)), `${n} runs`),
        }).finally(() => pbar.stop());
        if (o.exportProfile) fs.writeFileSync(o.exportProfile, JSON.stringify(layerProfileJson(prof), null, 2));
        if (o.dumpProfile) {
          if (o.json) out.profile = layerProfileJson(prof);
          say('\n' + formatLayerProfile(prof));
        }
      }
      if (o.json) console.log(JSON.stringify({ model: source, ...summary, ...out }, null, 2));
      engine.dispose();
    });
}

/** `kiln bench --devices 0,1`: build (or load) once, run one engine per GPU at the same time. */
async function devicesBench(o: Record<string, any>, percentiles: number[]): Promise<void> {
  const ids = parseDeviceList(String(o.devices));
  const { name } = parseDevice(o.device ?? 'cpu');
  if (o.onnx && name !== 'cuda') throw new InputError(`--devices runs on GPUs: add --device cuda (got '${o.device ?? 'cpu'}').`);
  const { engine, plan, feeds, source } = await engineAndInputs({ ...o, device: `${name}:${ids[0]}` });
  engine.dispose();
  const bar = progressBar('benchmark');
  const r = await benchDevices(plan ?? o.loadEngine, ids, feeds, {
    warmUpMs: o.warmUp, durationS: o.duration, iterations: o.iterations, streams: o.streams, dataTransfers: o.dataTransfers, percentiles,
    cudaGraph: o.useCudaGraph ? true : o.cudaGraph === false ? false : undefined, threads: o.threads,
  }).finally(() => bar.stop());
  if (o.json) {
    console.log(JSON.stringify({ model: source, aggregate: r.aggregate, perDevice: r.perDevice }, null, 2));
    return;
  }
  console.log(`Model: ${source}`);
  for (const p of r.perDevice) {
    const s = p.summary;
    console.log(`device ${p.deviceId} (${s.device}): ${s.throughput.qps.toFixed(1)} qps, ${s.throughput.itemsPerS.toFixed(1)} items/s, latency median ${s.latency.median.toFixed(3)} ms`);
  }
  console.log(`aggregate over ${ids.length} device(s): ${r.aggregate.qps.toFixed(1)} qps, ${r.aggregate.itemsPerS.toFixed(1)} items/s`);
}

/** `kiln bench --pipeline spec.json --images DIR [--onnx model]`: images/s of the pipeline, alone or feeding the engine. */
async function pipelineBench(o: Record<string, any>): Promise<void> {
  const pipeline = await Pipeline.create(o.pipeline, { workers: o.pipelineWorkers, prefetch: o.prefetch });
  try {
    const hasModel = o.onnx || o.loadEngine;
    const built = hasModel ? await engineAndInputs(o) : undefined;
    const r = await benchPipeline(pipeline, o.images, { engine: built?.engine, epochs: o.epochs });
    const label = `${o.pipeline}${built ? ` -> ${built.source}` : ''}, ${pipeline.workers ? `${pipeline.workers.threads.length} workers` : 'in-thread'}, prefetch ${o.prefetch}`;
    if (o.json) console.log(JSON.stringify({ pipeline: o.pipeline, model: built?.source, workers: pipeline.workers?.threads.length ?? 0, prefetch: o.prefetch, ...r }, null, 2));
    else console.log(formatPipelineBench(r, label));
    built?.engine.dispose();
  } finally {
    await pipeline.close();
  }
}
