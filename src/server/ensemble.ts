// Ensembles (Triton's platform "ensemble"): a DAG of models declared in config. Each step maps ensemble tensors to
// its model's inputs (input_map) and its model's outputs to new ensemble tensors (output_map); a step starts as soon
// as all its inputs exist, so independent branches run at once, each through its own model's batcher.
import { ServeError, type BatchResult, type SubmitOptions } from './batcher.js';
import { kserveFromConfigType, kserveFromKiln, type EnsembleStep, type ModelConfig, type TensorConfig } from './config.js';
import { BytesTensor, type ServeTensor } from './model.js';

export type StepRunner = (model: string, version: number, feeds: Record<string, ServeTensor>, outputs: string[], batch: number) => Promise<BatchResult>;

const where = (ens: string, i: number, st: EnsembleStep) => `ensemble '${ens}' step ${i} (model '${st.model_name}')`;

interface Produced {
  type: string;
  dims: number[];
  batched: boolean;
  by: string;
}

const fmt = (d: number[]) => `[${d.join(',')}]`;
const dimsAgree = (a: number[], b: number[]) => a.length === b.length && a.every((d, i) => d < 0 || b[i] < 0 || d === b[i]);

/** Check the DAG at load time: every tensor has one producer, every step input and ensemble output is produced, no cycles, types and dims agree. */
export function validateEnsemble(cfg: ModelConfig, configOf: (model: string) => ModelConfig): void {
  const steps = cfg.ensemble_scheduling!.step;
  const batched = cfg.max_batch_size > 0;
  const producer = new Map<string, Produced>(cfg.input.map((t) => [t.name, { type: t.data_type, dims: t.dims, batched, by: 'the ensemble input' }]));
  steps.forEach((st, i) => {
    const sc = configOf(st.model_name);
    for (const [out, tensor] of Object.entries(st.output_map)) {
      const o = sc.output.find((x) => x.name === out);
      if (!o) throw new ServeError(`${where(cfg.name, i, st)}: output_map names '${out}', which is not an output of '${st.model_name}' (outputs: ${sc.output.map((x) => x.name).join(', ')}).`, 400);
      const prev = producer.get(tensor);
      if (prev) throw new ServeError(`${where(cfg.name, i, st)}: ensemble tensor '${tensor}' is already produced by ${prev.by}; each tensor needs exactly one producer.`, 400);
      producer.set(tensor, { type: o.data_type, dims: o.dims, batched: sc.max_batch_size > 0, by: `step ${i}` });
    }
  });
  steps.forEach((st, i) => {
    const sc = configOf(st.model_name);
    const unmapped = sc.input.filter((x) => !(x.name in st.input_map)).map((x) => x.name);
    if (unmapped.length) throw new ServeError(`${where(cfg.name, i, st)}: model input(s) ${unmapped.join(', ')} are not in input_map; map every input of the step's model.`, 400);
    for (const [inp, tensor] of Object.entries(st.input_map)) {
      if (!sc.input.some((x) => x.name === inp)) throw new ServeError(`${where(cfg.name, i, st)}: input_map names '${inp}', which is not an input of '${st.model_name}' (inputs: ${sc.input.map((x) => x.name).join(', ')}).`, 400);
      if (!producer.has(tensor)) throw new ServeError(`${where(cfg.name, i, st)}: ensemble tensor '${tensor}' is neither an ensemble input nor any step's output.`, 400);
    }
  });
  order(cfg);
  steps.forEach((st, i) => {
    const sc = configOf(st.model_name);
    for (const [inp, tensor] of Object.entries(st.input_map)) {
      const c = sc.input.find((x) => x.name === inp)!;
      const p = producer.get(tensor)!;
      if (p.type !== c.data_type) throw new ServeError(`${where(cfg.name, i, st)}: tensor '${tensor}' is ${p.type} (from ${p.by}), but input '${inp}' expects ${c.data_type}.`, 400);
      if (p.batched === sc.max_batch_size > 0 && !dimsAgree(p.dims, c.dims)) {
        throw new ServeError(`${where(cfg.name, i, st)}: tensor '${tensor}' has dims ${fmt(p.dims)} (from ${p.by}), but input '${inp}' expects ${fmt(c.dims)}.`, 400);
      }
    }
  });
  for (const o of cfg.output) {
    const p = producer.get(o.name);
    if (!p) throw new ServeError(`ensemble '${cfg.name}': output '${o.name}' is not produced by any step's output_map.`, 400);
    if (p.type !== o.data_type) throw new ServeError(`ensemble '${cfg.name}': output '${o.name}' is declared ${o.data_type}, but ${p.by} produces ${p.type}.`, 400);
  }
}

/** Steps in an order where each runs after its producers; throws on a cycle. */
function order(cfg: ModelConfig): number[] {
  const steps = cfg.ensemble_scheduling!.step;
  const have = new Set(cfg.input.map((t) => t.name));
  const done: number[] = [];
  while (done.length < steps.length) {
    const next = steps.findIndex((st, i) => !done.includes(i) && Object.values(st.input_map).every((t) => have.has(t)));
    if (next < 0) throw new ServeError(`ensemble '${cfg.name}': steps ${steps.map((_, i) => i).filter((i) => !done.includes(i)).join(', ')} wait on each other (a cycle).`, 400);
    done.push(next);
    for (const t of Object.values(steps[next].output_map)) have.add(t);
  }
  return done;
}

/** Only the steps that the requested outputs depend on. */
function needed(cfg: ModelConfig, outputs: string[]): Set<number> {
  const steps = cfg.ensemble_scheduling!.step;
  const want = new Set(outputs);
  const keep = new Set<number>();
  for (const i of order(cfg).reverse()) {
    if (!Object.values(steps[i].output_map).some((t) => want.has(t))) continue;
    keep.add(i);
    for (const t of Object.values(steps[i].input_map)) want.add(t);
  }
  return keep;
}

function checkFeed(cfg: ModelConfig, c: TensorConfig, t: ServeTensor, at: string): void {
  const got = t instanceof BytesTensor ? 'BYTES' : kserveFromKiln(t.type);
  const want = kserveFromConfigType(c.data_type);
  if (got !== want) throw new ServeError(`${at}: input '${c.name}' gets ${got}, expects ${want}.`, 400);
  const full = cfg.max_batch_size > 0 ? [-1, ...c.dims] : c.dims;
  const ok = t.dims.length === full.length && full.every((d, i) => d < 0 || d === t.dims[i]);
  if (!ok) throw new ServeError(`${at}: input '${c.name}' gets shape [${t.dims.join(',')}], expects [${full.join(',')}].`, 400);
}

export async function runEnsemble(cfg: ModelConfig, feeds: Record<string, ServeTensor>, outputs: string[], _so: SubmitOptions, runStep: StepRunner, configOf?: (m: string) => ModelConfig | undefined): Promise<BatchResult> {
  const steps = cfg.ensemble_scheduling!.step;
  const tensors = new Map<string, ServeTensor>(Object.entries(feeds));
  const waiting = needed(cfg, outputs);
  const total: BatchResult = { outputs: {}, queueNs: 0, computeInputNs: 0, computeInferNs: 0, computeOutputNs: 0 };
  await new Promise<void>((resolve, reject) => {
    let running = 0;
    let failed = false;
    const launch = () => {
      for (const i of [...waiting]) {
        const st = steps[i];
        if (!Object.values(st.input_map).every((t) => tensors.has(t))) continue;
        waiting.delete(i);
        running++;
        const f: Record<string, ServeTensor> = {};
        for (const [inp, t] of Object.entries(st.input_map)) f[inp] = tensors.get(t)!;
        const sc = configOf?.(st.model_name);
        try {
          if (sc) for (const c of sc.input) checkFeed(sc, c, f[c.name], where(cfg.name, i, st));
        } catch (e) {
          return fail(e as Error);
        }
        const first = Object.values(f)[0];
        const batch = sc && sc.max_batch_size > 0 && first ? first.dims[0] : 1;
        runStep(st.model_name, st.model_version, f, Object.keys(st.output_map), batch).then((r) => {
          running--;
          if (failed) return;
          for (const [out, t] of Object.entries(st.output_map)) tensors.set(t, r.outputs[out]);
          total.queueNs += r.queueNs;
          total.computeInputNs += r.computeInputNs;
          total.computeInferNs += r.computeInferNs;
          total.computeOutputNs += r.computeOutputNs;
          if (waiting.size === 0 && running === 0) resolve();
          else launch();
        }, (e: Error) => fail(e instanceof ServeError ? new ServeError(`${where(cfg.name, i, st)}: ${e.message}`, e.status, e.reason) : e));
      }
      if (waiting.size === 0 && running === 0) resolve();
    };
    const fail = (e: Error) => {
      failed = true;
      reject(e);
    };
    launch();
  });
  for (const o of outputs) {
    const t = tensors.get(o);
    if (!t) throw new ServeError(`ensemble '${cfg.name}': no step produced output '${o}'.`, 500, 'BACKEND');
    total.outputs[o] = t;
  }
  return total;
}
