// GPU check of the quantized engines (issue 8): each small zoo model quantized by Kiln (int8 and fp8), built for
// cuda and for the reference CPU executor, run on the same seeded inputs; PASS when every quantized layer ran on the
// GPU and the outputs agree within one LSB of the output scale (float outputs: |diff| <= 1 LSB of amax/127 for int8,
// relative 2e-2 for fp8). Also runs the QMatMul of BERT-small through cuBLASLt (KILN_QGEMM=cublaslt) as a second path,
// the wgmma kernel (KILN_QGEMM=wgmma, =wgmma-staged, =wgmma64; Hopper), and fp16 builds (the speed configuration: fp16 residuals and float outputs around the quantized layers) against the
// CPU engine built at fp16 too.
// Usage (GPU machine): node bench/gpu/quant-check.js
import { resnet50, RESNET_SMALL, bertBase, BERT_SMALL, tinyCnn } from '../models/zoo.js';
import { quantizeModel } from '../../src/tools/quantize.js';
import { randomCalibrationData } from '../../src/quant/data.js';
import { build } from '../../src/build/builder.js';
import { Engine } from '../../src/runtime/engine.js';
import { Tensor } from '../../src/runtime/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import type { CudaRunner } from '../../src/backends/cuda/runner.js';

let failures = 0;
const report = (ok: boolean, what: string) => {
  if (!ok) failures++;
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
};

async function check(name: string, make: () => Model, mode: 'int8' | 'fp8', batch: number, env?: string, precision: 'fp32' | 'fp16' = 'fp32') {
  const m = make();
  const data = randomCalibrationData(m.graph, batch, { seed: 9 });
  const shapes = Object.fromEntries([...data].map(([k, t]) => [k, [...t.dims]]));
  const { model: q } = quantizeModel(m, { mode, calibrationData: randomCalibrationData(m.graph, 4, { seed: 1 }), evalData: randomCalibrationData(m.graph, 1, { seed: 2 }), batchSize: 4 });
  if (env) process.env.KILN_QGEMM = env;
  try {
    const gpu = await Engine.load(await build(q, { device: 'cuda', precision, shapes }));
    // an fp16 build is compared with the CPU engine built the same way (fp16 residuals and float outputs, NHWC)
    const cpu = await Engine.load(await build(q, { device: 'cpu', shapes, ...(precision === 'fp16' ? { precision, layout: 'NHWC' as const } : {}) }));
    const feeds: Record<string, Tensor> = {};
    for (const [k, t] of data) feeds[k] = new Tensor(t.dtype as 'float32', t.data as Float32Array, [...t.dims]);
    const [a, b] = [await gpu.createContext().run(feeds), await cpu.createContext().run(feeds)];
    await gpu.createContext().run(feeds); // second run: the captured CUDA graph must agree too
    const c = await gpu.createContext().run(feeds);
    const runner = (gpu as unknown as { runner: CudaRunner }).runner;
    const qOnCpu = [...runner.cpuLayers].filter((l) => q.graph.nodes.some((n) => n.name === l));
    for (const out of Object.keys(b)) {
      const x = (a[out] as Tensor).data as Float32Array, y = (b[out] as Tensor).data as Float32Array, z = (c[out] as Tensor).data as Float32Array;
      let amax = 0, maxDiff = 0, replayDiff = 0, dot = 0, nx = 0, ny = 0;
      for (let i = 0; i < y.length; i++) {
        amax = Math.max(amax, Math.abs(y[i]));
        maxDiff = Math.max(maxDiff, Math.abs(x[i] - y[i]));
        replayDiff = Math.max(replayDiff, Math.abs(z[i] - x[i]));
        dot += x[i] * y[i]; nx += x[i] * x[i]; ny += y[i] * y[i];
      }
      const cos = dot / Math.sqrt(nx * ny);
      const lsb = mode === 'int8' ? amax / 127 : amax * 2e-2;
      report(maxDiff <= lsb && replayDiff === 0, `${name} ${mode}${env ? ` (${env})` : ''}${precision === 'fp16' ? ' [fp16 build]' : ''} ${out}: max |gpu-ref| ${maxDiff.toExponential(2)} = ${(maxDiff / (amax / 127)).toFixed(3)} LSB, cosine ${cos.toFixed(5)}, replay diff ${replayDiff}`);
    }
    const gpuLayers = (gpu.header.layers as { opType?: string; name: string }[]).length;
    // every layer on the GPU (a CPU layer inside the engine costs a round trip and keeps the run out of a CUDA graph)
    report(qOnCpu.length === 0 && runner.cpuLayers.size === 0, `${name} ${mode}: ${gpuLayers} layers, on the CPU: ${JSON.stringify([...runner.cpuLayers])} ${JSON.stringify([...runner.fallbackReasons].slice(0, 3))}`);
    gpu.dispose();
  } catch (e) {
    report(false, `${name} ${mode}: ${(e as Error).stack?.split('\n').slice(0, 4).join(' | ')}`);
  } finally {
    delete process.env.KILN_QGEMM;
  }
}

await check('tiny-cnn', () => tinyCnn(), 'int8', 3);
await check('resnet50-small', () => resnet50(RESNET_SMALL), 'int8', 2);
await check('resnet50-small', () => resnet50(RESNET_SMALL), 'fp8', 2);
// two blocks per stage: the residual stream between blocks is quantized inside the NHWC region
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }), 'int8', 2);
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }), 'int8', 2, undefined, 'fp16');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1] }), 'fp8', 2, undefined, 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2);
await check('bert-small', () => bertBase(BERT_SMALL), 'fp8', 2);
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, undefined, 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'fp8', 2, undefined, 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'cublaslt');
await check('bert-small', () => bertBase(BERT_SMALL), 'fp8', 2, 'cublaslt');
// Hopper: every int8 GEMM forced onto the wgmma kernel (the timed tactic picks it only where it is fastest; fp8 wgmma
// is not a candidate: its accumulation is less precise, see src/backends/cuda/codegen/quant.ts)
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma');
// the staged-epilogue wgmma variants, in fp16 builds too (fp16 outputs, fp16 residuals, int8 second outputs)
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma-staged');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma-staged', 'fp16');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma64', 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma-staged', 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma64');
await check('resnet50-small2', () => resnet50({ ...RESNET_SMALL, blocks: [2, 2, 1, 1], width: 16 }), 'int8', 2, 'wgmma-persistent-staged', 'fp16');
await check('bert-small', () => bertBase(BERT_SMALL), 'int8', 2, 'wgmma-persistent-staged', 'fp16');
console.log(`quant checks: ${failures} failure(s)`);
process.exit(failures ? 1 : 0);
