// GPU parity check (run on the GPU machine): every small zoo model and a set of GEMM shapes on the cuda provider
// against Kiln's CPU reference kernels. Prints one line per check and which layers fell back to the CPU.
import { cudaBackend } from '../../src/backends/cuda/index.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor, toTensorData } from '../../src/runtime/tensor.js';
import { executeGraph } from '../../src/ops/execute.js';
import { makeInputs } from '../../src/tools/inputs.js';
import type { Model } from '../../src/ir/graph.js';
import type { TensorData } from '../../src/ir/tensor.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';
import { tinyCnn, resnet50, RESNET_SMALL, mobilenetV2, MOBILENET_SMALL, bertBase, BERT_SMALL, gpt2, GPT2_SMALL } from '../models/zoo.js';

const a = cudaBackend.availability();
console.log(`cuda available: ${a.ok}${a.reason ? ` (${a.reason})` : ''}; device: ${cudaBackend.signature().name} sm_${cudaBackend.signature().features.sm}`);
if (!a.ok) process.exit(1);

// GEMM configurations straight through cuBLASLt against a float64 reference
{
  const { getDevice } = await import('../../src/backends/cuda/device.js');
  const { prepareGemm } = await import('../../src/backends/cuda/ffi/cublaslt.js');
  const dev = getDevice(0);
  const stream = dev.createStream();
  const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);
  const cases = [
    { M: 2, N: 10, K: 32, tA: false, tB: true, bias: true, res: false, batch: 1 },
    { M: 2, N: 10, K: 256, tA: false, tB: true, bias: true, res: false, batch: 1 },
    { M: 32, N: 96, K: 32, tA: false, tB: false, bias: true, res: false, batch: 1 },
    { M: 32, N: 32, K: 32, tA: false, tB: false, bias: true, res: true, batch: 1 },
    { M: 16, N: 16, K: 8, tA: false, tB: false, bias: false, res: false, batch: 8 },
  ];
  for (const c of cases) {
    const A = rnd(c.batch * c.M * c.K), B = rnd(c.batch * c.K * c.N), bias = rnd(c.N), R = rnd(c.batch * c.M * c.N);
    const up = (x: Float32Array) => { const p = dev.alloc(x.byteLength); dev.upload(p, x, stream); return p; };
    const pa = up(A), pb = up(B), pbias = up(bias), pr = up(R), pd = dev.alloc(4 * c.batch * c.M * c.N);
    const g = prepareGemm({ M: c.M, N: c.N, K: c.K, batch: c.batch, transA: c.tA, transB: c.tB, dtype: 'float32', strideA: c.M * c.K, strideB: c.K * c.N, strideC: c.M * c.N,
      epilogue: c.bias ? 'bias' : 'none', beta: c.res ? 1 : 0 }, 'check');
    g.run(pa, pb, pd, pbias, stream, 0, c.res ? pr : undefined);
    const D = new Float32Array(c.batch * c.M * c.N);
    dev.download(pd, D, stream);
    let err = 0;
    for (let b = 0; b < c.batch; b++) for (let i = 0; i < c.M; i++) for (let j = 0; j < c.N; j++) {
      let s = (c.bias ? bias[j] : 0) + (c.res ? R[b * c.M * c.N + i * c.N + j] : 0);
      for (let k = 0; k < c.K; k++) s += A[b * c.M * c.K + (c.tA ? k * c.M + i : i * c.K + k)] * B[b * c.K * c.N + (c.tB ? j * c.K + k : k * c.N + j)];
      err = Math.max(err, Math.abs(s - D[b * c.M * c.N + i * c.N + j]));
    }
    console.log(`${err < 1e-3 ? 'PASS' : 'FAIL'} gemm ${JSON.stringify(c)} max abs err ${err.toExponential(2)}`);
  }
}

const models: [string, Model, Record<string, number[]>][] = [
  ['tiny CNN', tinyCnn(), { input: [2, 3, 32, 32] }],
  ['ResNet small', resnet50(RESNET_SMALL), {}],
  ['MobileNetV2 small', mobilenetV2(MOBILENET_SMALL), {}],
  ['BERT small', bertBase(BERT_SMALL), { input_ids: [2, 16], attention_mask: [2, 16] }],
  ['GPT-2 small', gpt2(GPT2_SMALL), { input_ids: [2, 16] }],
];
let failures = 0;
for (const [name, model, shapes] of models) {
  for (const precision of ['fp32', 'fp16', 'bf16'] as const) {
    try {
      const metas = model.graph.inputs.filter((i) => !model.graph.initializers.has(i.name)).map((i) => ({
        name: i.name, isTensor: true, type: (i.type as { dtype: string }).dtype,
        shape: shapes[i.name] ?? ((i.type as { shape: (number | string)[] }).shape ?? []).map((d) => (typeof d === 'number' ? d : 2)),
      }));
      const feeds = makeInputs(metas, { random: true, seed: 5, range: [0, 1] });
      if (feeds.attention_mask) feeds.attention_mask = new Tensor('int64', BigInt64Array.from({ length: feeds.attention_mask.size }, (_, i) => (i % 7 === 6 ? 0n : 1n)), feeds.attention_mask.dims);
      if (feeds.input_ids) feeds.input_ids = new Tensor('int64', BigInt64Array.from({ length: feeds.input_ids.size }, (_, i) => BigInt((i * 37) % 90)), feeds.input_ids.dims);
      const ref = executeGraph(model.graph, new Map(Object.entries(feeds).map(([k, t]) => [k, toTensorData(t)])), { opsets: model.opsets });
      const plan = await build(model, { device: 'cuda', precision, shapes: Object.keys(shapes).length ? shapes : undefined });
      const engine = await Engine.load(plan);
      const ctx = engine.createContext();
      await ctx.run(feeds); // eager
      await ctx.run(feeds); // captured into a CUDA graph when every layer runs on the GPU
      const out = await ctx.run(feeds); // replayed
      const runner = (engine as unknown as { runner: CudaRunner }).runner;
      for (const [k, v] of ref) {
        const got = toTensorData(out[k] as Tensor), e = v as TensorData;
        const gv = got.toFloat64(), ev = e.toFloat64();
        let num = 0, den = 0;
        for (let i = 0; i < ev.length; i++) { num += (gv[i] - ev[i]) ** 2; den += ev[i] ** 2; }
        const rel = Math.sqrt(num / Math.max(den, 1e-30));
        const tol = precision === 'fp32' ? 1e-3 : precision === 'fp16' ? 2e-2 : 6e-2; // bf16 keeps 8 mantissa bits
        const ok = rel <= tol && got.dims.join() === e.dims.join();
        if (!ok) failures++;
        console.log(`${ok ? 'PASS' : 'FAIL'} ${name} ${precision} ${k}: rel err ${rel.toExponential(2)} (tol ${tol}) dims ${got.dims}`);
      }
      if (failures && process.env.KILN_CHECK_TRACE) {
        let reported = false;
        await engine.createContext().run(feeds, undefined, {
          keepAll: true,
          onLayer: (node, outs) => {
            if (reported) return;
            for (const v of outs) {
              if (v && 'dtype' in v && v.dtype !== 'string' && Array.from(v.toFloat64()).some((x) => Number.isNaN(x))) {
                console.log(`   first NaN: layer '${node.name}' (${node.domain}:${node.opType}) on ${runner.cpuLayers.has(node.name) ? 'cpu' : 'gpu'} inputs ${node.inputs.join(', ')}`);
                reported = true;
              }
            }
          },
        });
      }
      console.log(`   cpu-fallback layers: ${[...runner.cpuLayers].join(', ') || 'none'}`);
      for (const [l, r] of runner.fallbackReasons) console.log(`   ${l}: ${r}`);
      engine.dispose();
    } catch (e) {
      failures++;
      console.log(`FAIL ${name} ${precision}: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
    }
  }
}
// a plan that carries its kernels: written here, loaded by load-plan.ts in a fresh process with NVRTC disabled
{
  const { parsePlan } = await import('../../src/build/plan.js');
  const plan = await build(tinyCnn(), { device: 'cuda', shapes: { input: [2, 3, 32, 32] } });
  const has = parsePlan(plan.bytes).blobs.has('cuda.cubins');
  if (!has) failures++;
  console.log(`${has ? 'PASS' : 'FAIL'} plan stores its cubins`);
  await plan.save('/tmp/kiln-check.plan');
}
console.log(`\n${failures} failures`);
process.exit(failures ? 1 : 0);
