// GPU check of the LLM runtime (run on the GPU machine; prints PASS/FAIL lines, exit code 1 on any FAIL):
// 1. the CUDA paged-attention kernels against the TypeScript kernel on random data (GQA, several blocks, prefill
//    over a cached prefix, decode), fp32 cache;
// 2. greedy tokens of LlmEngine on the cuda provider against the fixtures' Hugging Face references: fp32 identical;
//    fp16/bf16 may drift, allowed only where the reference's top-2 logit margin is a near tie (< DRIFT_MARGIN);
// 3. batched = unbatched, greedy beside a sampled request (logits to the host) = greedy alone (device argmax), and
//    chunked prefill (tiny step budget) = one-shot prefill, on the GPU.
// Usage: node bench/llm/check-gpu.js [fixtures dir]
import fs from 'node:fs';
import path from 'node:path';
import { CpuPagedAttention, type AttentionSeq, type AttentionShape } from '../../src/llm/attention.js';
import { CudaPagedAttention, type CacheDtype } from '../../src/llm/attention-cuda.js';
import { LlmEngine, type GenerateRequest } from '../../src/llm/engine.js';

const FIX = process.argv[2] ?? 'test/fixtures/llm';
const DRIFT_MARGIN = 0.05;
let failed = 0;
const report = (ok: boolean, what: string) => {
  if (!ok) failed++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
};

function rand(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1);
}

/** Both kernels over the same steps: a 3-sequence prefill (one with a cached prefix), then two decode steps. */
function kernelCheck(dtype: CacheDtype): void {
  const shape: AttentionShape = { numLayers: 2, numHeads: 8, numKvHeads: 2, headDim: 64, numBlocks: 40, blockSize: 16, scale: 0.125 };
  const cpu = new CpuPagedAttention(shape), gpu = new CudaPagedAttention(shape, dtype);
  const qw = shape.numHeads * shape.headDim, kw = shape.numKvHeads * shape.headDim;
  const tables = [[3, 7, 1, 9, 12], [0, 2, 4, 6], [20, 21, 22]];
  const ctx = [0, 0, 0];
  let worst = 0, seed = 1;
  const step = (lens: number[], decode: boolean) => {
    let row = 0;
    const seqs: AttentionSeq[] = lens.map((n, i) => ({ rowStart: (row += n) - n, numTokens: n, contextLen: ctx[i], blockTable: tables[i] }));
    for (let layer = 0; layer < shape.numLayers; layer++) {
      const q = rand(row * qw, seed++), k = rand(row * kw, seed++), v = rand(row * kw, seed++);
      const o1 = new Float32Array(row * qw), o2 = new Float32Array(row * qw);
      const s = { layer, q, k, v, seqs };
      if (decode) { cpu.decode({ ...s, out: o1 }); gpu.decode({ ...s, out: o2 }); } else { cpu.prefill({ ...s, out: o1 }); gpu.prefill({ ...s, out: o2 }); }
      for (let i = 0; i < o1.length; i++) worst = Math.max(worst, Math.abs(o1[i] - o2[i]));
    }
    lens.forEach((n, i) => (ctx[i] += n));
  };
  step([37, 1, 20], false);
  step([9, 5, 13], false); // prefill chunks over a cached prefix
  step([1, 1, 1], true);
  step([1, 1, 1], true);
  gpu.copyBlocks([[3, 30]]);
  cpu.release();
  gpu.release();
  const tol = dtype === 'float32' ? 1e-4 : 2e-2;
  report(worst < tol, `paged attention kernels (${dtype} cache) vs TypeScript: max |diff| ${worst.toExponential(2)} (tolerance ${tol})`);
}

interface Greedy { prompt_ids: number[]; output_ids: number[]; top2_margins: number[] }

async function tokens(engine: LlmEngine, req: GenerateRequest): Promise<number[]> {
  const out: number[] = [];
  for await (const e of engine.generate(req)) if (e.tokenId >= 0) out.push(e.tokenId);
  return out;
}

function firstDiff(a: number[], b: number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

async function modelCheck(name: string, dtype: 'float32' | 'float16' | 'bfloat16'): Promise<void> {
  const dir = path.join(FIX, name);
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8')) as { greedy: Greedy[] };
  const t0 = performance.now();
  const engine = await LlmEngine.load(dir, { provider: 'cuda', dtype, maxBatch: 8 });
  const loadS = (performance.now() - t0) / 1000;
  const req = (g: Greedy): GenerateRequest => ({ prompt: g.prompt_ids, maxTokens: g.output_ids.length, ignoreEos: true });
  const single: number[][] = [];
  for (const g of expected.greedy) single.push(await tokens(engine, req(g)));
  const batched = await Promise.all(expected.greedy.map((g) => tokens(engine, req(g))));
  // a sampled request in the batch sends the step down the logits path (host sampling) instead of device argmax
  const [mixed] = await Promise.all([tokens(engine, req(expected.greedy[0])), tokens(engine, { ...req(expected.greedy[0]), temperature: 0.8, seed: 1 })]);
  await engine.close();
  const chunked = await LlmEngine.load(dir, { provider: 'cuda', dtype, maxBatch: 8, maxStepTokens: 3, prefixCaching: false });
  const small: number[][] = [];
  for (const g of expected.greedy) small.push(await tokens(chunked, req(g)));
  await chunked.close();
  let drift = 0, ok = true;
  const notes: string[] = [];
  expected.greedy.forEach((g, i) => {
    const d = firstDiff(single[i], g.output_ids);
    if (d < 0) return;
    drift++;
    const margin = g.top2_margins[d];
    notes.push(`prompt ${i} diverges at token ${d}/${g.output_ids.length} (HF top-2 margin ${margin.toFixed(4)})`);
    if (dtype === 'float32' || !(margin < DRIFT_MARGIN)) ok = false;
  });
  const total = expected.greedy.length;
  report(ok, `${name} ${dtype} cuda greedy vs transformers: ${total - drift}/${total} prompts identical${notes.length ? `; ${notes.join('; ')}` : ''} (load ${loadS.toFixed(1)} s)`);
  const bDiff = batched.map((b, i) => firstDiff(b, single[i])).filter((d) => d >= 0).length;
  report(bDiff === 0, `${name} ${dtype} cuda batched = unbatched: ${total - bDiff}/${total} prompts identical`);
  report(firstDiff(mixed, single[0]) < 0, `${name} ${dtype} cuda greedy next to a sampled request (host sampling from logits) = device argmax alone`);
  const cDiff = small.map((b, i) => firstDiff(b, single[i])).filter((d) => d >= 0).length;
  report(cDiff === 0, `${name} ${dtype} cuda chunked prefill (3 tokens a step) = one-shot: ${total - cDiff}/${total} prompts identical`);
}

for (const dtype of ['float32', 'float16', 'bfloat16'] as const) {
  try {
    kernelCheck(dtype);
  } catch (e) {
    report(false, `paged attention kernels (${dtype}): ${(e as Error).stack}`);
  }
}
for (const name of ['gpt2-tiny', 'llama-tiny']) {
  for (const dtype of ['float32', 'float16'] as const) {
    try {
      await modelCheck(name, dtype);
    } catch (e) {
      report(false, `${name} ${dtype}: ${(e as Error).stack}`);
    }
  }
}
console.log(failed ? `${failed} check(s) failed` : 'all checks passed');
process.exit(failed ? 1 : 0);
