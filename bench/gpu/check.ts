// GPU parity check (run on the GPU machine): every small zoo model and a set of GEMM shapes on the cuda provider
// against Kiln's CPU reference kernels, and kiln:Attention's fused kernel against its unfused plan and a float64
// reference. Prints one line per check and which layers fell back to the CPU. KILN_CHECK_ONLY=attention stops after
// the attention rows.
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

// kiln:Attention: the fused kernel (KILN_ATTN=fused) and the three-kernel plan (=unfused) against a float64 reference
// on the same fp16/bf16-rounded inputs, masks of each broadcast shape, odd S/L, K as [L, D] and as [D, L]. Each
// output buffer is poisoned with NaN before its run (the pool hands the freed block back), so an element either path
// leaves unwritten fails the row.
let attnFailures = 0;
{
  const { getDevice } = await import('../../src/backends/cuda/device.js');
  const { GPU_OPS } = await import('../../src/backends/cuda/ops.js');
  const { timeOnStream } = await import('../../src/backends/cuda/ffi/cublaslt.js');
  const { TensorData: TD } = await import('../../src/ir/tensor.js');
  const dev = getDevice(0);
  const stream = dev.createStream();
  type MaskKind = 'none' | 'B11L' | 'BHSL' | 'SL' | 'B1S1' | 'L' | 'bool-B11L' | 'bool-BHSL' | 'f16-B11L';
  const cases: { lead: number[]; S: number; L: number; D: number; Dv: number; kt: 0 | 1; dtype: 'float16' | 'bfloat16'; mask: MaskKind; time?: boolean }[] = [
    { lead: [8, 12], S: 128, L: 128, D: 64, Dv: 64, kt: 1, dtype: 'float16', mask: 'B11L', time: true },
    { lead: [8, 12], S: 128, L: 128, D: 64, Dv: 64, kt: 0, dtype: 'float16', mask: 'B11L', time: true },
    { lead: [2, 12], S: 512, L: 512, D: 64, Dv: 64, kt: 1, dtype: 'float16', mask: 'B11L', time: true },
    { lead: [2, 3], S: 37, L: 45, D: 64, Dv: 64, kt: 0, dtype: 'float16', mask: 'BHSL' },
    { lead: [2, 3], S: 37, L: 45, D: 64, Dv: 64, kt: 1, dtype: 'float16', mask: 'SL' },
    { lead: [3, 2], S: 19, L: 53, D: 96, Dv: 96, kt: 1, dtype: 'float16', mask: 'B1S1' },
    { lead: [3, 2], S: 70, L: 130, D: 80, Dv: 80, kt: 0, dtype: 'float16', mask: 'L' },
    { lead: [2, 4], S: 33, L: 65, D: 128, Dv: 128, kt: 0, dtype: 'bfloat16', mask: 'bool-B11L' },
    { lead: [2, 4], S: 33, L: 64, D: 32, Dv: 32, kt: 1, dtype: 'bfloat16', mask: 'bool-BHSL' },
    { lead: [4], S: 200, L: 77, D: 32, Dv: 64, kt: 0, dtype: 'float16', mask: 'none' },
    { lead: [2, 2], S: 16, L: 1, D: 16, Dv: 16, kt: 1, dtype: 'float16', mask: 'f16-B11L' },
    { lead: [2, 12], S: 128, L: 128, D: 40, Dv: 40, kt: 1, dtype: 'float16', mask: 'B11L' }, // not fused: both routes are the unfused plan
  ];
  const rnd = (n: number) => Array.from({ length: n }, () => Math.random() * 2 - 1);
  for (const c of cases) {
    const B = c.lead[0], Hh = c.lead.length > 1 ? c.lead[1] : 1, nb = c.lead.reduce((x, y) => x * y, 1);
    const scale = 1 / Math.sqrt(c.D);
    const qd = [...c.lead, c.S, c.D], kd = c.kt ? [...c.lead, c.D, c.L] : [...c.lead, c.L, c.D], vd = [...c.lead, c.L, c.Dv];
    // scores of a few units (x3): softmax far from uniform, so a wrong key or row shows
    const [q, k, v] = [qd, kd, vd].map((d, i) => TD.fromNumbers(c.dtype, d, rnd(d.reduce((x, y) => x * y, 1)).map((x) => x * (i < 2 ? 3 : 1))));
    const md: Record<MaskKind, number[]> = {
      none: [], B11L: [B, 1, 1, c.L], 'f16-B11L': [B, 1, 1, c.L], 'bool-B11L': [B, 1, 1, c.L], BHSL: [B, Hh, c.S, c.L], 'bool-BHSL': [B, Hh, c.S, c.L],
      SL: [c.S, c.L], B1S1: [B, 1, c.S, 1], L: [c.L],
    };
    const mdims = md[c.mask], mn = mdims.reduce((x, y) => x * y, 1);
    const boolMask = c.mask.startsWith('bool');
    // key 0 is never masked (no all -inf row); ~1/4 of the rest are (-10000 additive, as BERT's, or false)
    const mvals = Array.from({ length: mn }, (_, i) => (i % (mdims[mdims.length - 1] || 1) === 0 || Math.random() > 0.25 ? (boolMask ? 1 : Math.random() * 0.5) : (boolMask ? 0 : -10000)));
    const mask = c.mask === 'none' ? undefined : TD.fromNumbers(boolMask ? 'bool' : c.mask === 'f16-B11L' ? 'float16' : 'float32', mdims, mvals);
    // float64 reference
    const [qf, kf, vf] = [q, k, v].map((t) => t.toFloat64());
    const mf = mask?.toFloat64();
    const full = [...c.lead, c.S, c.L];
    const mst = mask ? (() => { const st: number[] = []; let acc = 1; for (let i = mdims.length - 1; i >= 0; i--) { st[i] = mdims[i] === 1 ? 0 : acc; acc *= mdims[i]; } return [...new Array(full.length - mdims.length).fill(0), ...st]; })() : [];
    const ref = new Float64Array(nb * c.S * c.Dv);
    for (let b = 0; b < nb; b++) for (let i = 0; i < c.S; i++) {
      const sc = new Float64Array(c.L);
      let mx = -Infinity;
      for (let j = 0; j < c.L; j++) {
        let x = 0;
        for (let d = 0; d < c.D; d++) x += qf[(b * c.S + i) * c.D + d] * kf[c.kt ? (b * c.D + d) * c.L + j : (b * c.L + j) * c.D + d];
        x *= scale;
        if (mf) {
          const lead = c.lead.length > 1 ? [Math.floor(b / c.lead[1]), b % c.lead[1]] : [b];
          const coord = [...lead, i, j];
          const mv = mf[coord.reduce((o, x2, ax) => o + x2 * mst[ax], 0)];
          x = boolMask ? (mv ? x : -Infinity) : x + mv;
        }
        sc[j] = x;
        mx = Math.max(mx, x);
      }
      let sum = 0;
      for (let j = 0; j < c.L; j++) sum += (sc[j] = Math.exp(sc[j] - mx));
      for (let d = 0; d < c.Dv; d++) {
        let o = 0;
        for (let j = 0; j < c.L; j++) o += sc[j] * vf[(b * c.L + j) * c.Dv + d];
        ref[(b * c.S + i) * c.Dv + d] = o / sum;
      }
    }
    const up = (t: TensorData) => {
      const data = t.data as ArrayBufferView, p = dev.alloc(data.byteLength);
      dev.upload(p, data, stream);
      return { ptr: p, dtype: t.dtype, dims: [...t.dims], bytes: data.byteLength, owned: false };
    };
    const ins = [up(q), up(k), up(v), ...(mask ? [up(mask)] : [])];
    const node = { name: `attn_check_${c.S}x${c.L}`, opType: 'Attention', domain: 'kiln', inputs: ['q', 'k', 'v', ...(mask ? ['m'] : [])], outputs: ['o'], attrs: {} };
    const outBytes = nb * c.S * c.Dv * 2;
    const results: Record<string, { rel: number; got: Float64Array; ms?: number }> = {};
    // the default shape (row groups x key split), a few others, the unfused plan
    const routes = c.time ? ['fused', 'fused:2x1', 'fused:4x1', 'fused:2x2', 'fused:4x2', 'fused:1x4', 'fused:2x4', 'unfused'] : ['fused', 'fused:2x1', 'fused:1x4', 'unfused'];
    for (const route of routes) {
      process.env.KILN_ATTN = route;
      try {
        const impl = GPU_OPS['kiln:Attention']({ node, opset: 1, attrs: { scale, k_transposed: c.kt }, dev, inputs: ins.map((t) => ({ dtype: t.dtype, dims: t.dims })) } as never)!;
        const poison = dev.alloc(outBytes);
        dev.upload(poison, new Uint16Array(outBytes / 2).fill(0x7fff), stream);
        dev.sync(stream);
        dev.release(poison);
        const [o] = impl.run(ins, stream);
        const raw = new Uint16Array(outBytes / 2);
        dev.download(o.ptr, raw, stream);
        const got = new TD(c.dtype, [raw.length], raw).toFloat64();
        let num = 0, den = 0;
        for (let i = 0; i < ref.length; i++) { num += (got[i] - ref[i]) ** 2; den += ref[i] ** 2; }
        // 20 launches back to back between the events: device time per launch, the host's launch gap mostly hidden
        const ms = c.time ? timeOnStream(() => { for (let i = 0; i < 20; i++) { const [t] = impl.run(ins, stream); dev.release(t.ptr); } }, stream, 15) / 20 : undefined;
        results[route] = { rel: Math.sqrt(num / den), got, ms };
        impl.destroy?.();
      } catch (e) {
        results[route] = { rel: NaN, got: new Float64Array(0) };
        console.log(`   ${route}: ${(e as Error).message}`);
      }
    }
    delete process.env.KILN_ATTN;
    const tol = c.dtype === 'float16' ? 5e-3 : 3e-2;
    let diff = 0, dden = 0;
    for (let i = 0; i < ref.length; i++) { diff += (results.fused.got[i] - results.unfused.got[i]) ** 2; dden += ref[i] ** 2; }
    const between = Math.sqrt(diff / dden);
    const ok = routes.every((r) => results[r].rel <= tol) && between <= tol;
    if (!ok) attnFailures++;
    const t = c.time ? ` | us per launch: ${routes.map((r) => `${r} ${(results[r].ms! * 1000).toFixed(1)}`).join(', ')}` : '';
    console.log(`${ok ? 'PASS' : 'FAIL'} attention ${c.dtype} [${c.lead}] S ${c.S} L ${c.L} D ${c.D}/${c.Dv} k_transposed ${c.kt} mask ${c.mask}: rel err fused ${results.fused.rel.toExponential(2)}, unfused ${results.unfused.rel.toExponential(2)}, fused vs unfused ${between.toExponential(2)} (tol ${tol})${t}`);
  }
}
if (process.env.KILN_CHECK_ONLY === 'attention') {
  console.log(`\n${attnFailures} failures`);
  process.exit(attnFailures ? 1 : 0);
}

const models: [string, Model, Record<string, number[]>][] = [
  ['tiny CNN', tinyCnn(), { input: [2, 3, 32, 32] }],
  ['ResNet small', resnet50(RESNET_SMALL), {}],
  ['MobileNetV2 small', mobilenetV2(MOBILENET_SMALL), {}],
  ['BERT small', bertBase(BERT_SMALL), { input_ids: [2, 16], attention_mask: [2, 16] }],
  ['GPT-2 small', gpt2(GPT2_SMALL), { input_ids: [2, 16] }],
];
let failures = attnFailures;
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
