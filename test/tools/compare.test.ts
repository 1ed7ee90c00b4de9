// kiln compare: error statistics, runners (reference kernels, optimized CPU builds, onnxruntime, plans), per-layer
// comparison with a deliberately faulty kernel, golden outputs, mismatched inputs, the CLI; and kiln inspect's
// model/capability/data views.
import { describe, it, expect, afterAll, afterEach } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import { TensorData } from '../../src/ir/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import { callKernel } from '../../src/ops/execute.js';
import { overrideCpuKernelForTesting } from '../../src/backends/cpu/index.js';
import { build } from '../../src/build/builder.js';
import { compareModel, compareTensors, compareScript, formatCompareReport, DEFAULT_TOLERANCE } from '../../src/tools/compare.js';
import { writeTensors, readTensors } from '../../src/tools/compare-io.js';
import { inspectCapability, modelLayers, modelWeights, summarizeTensor, formatCapability } from '../../src/tools/inspect.js';
import * as api from '../../src/index.js';
import { resnet50, RESNET_SMALL, mobilenetV2, MOBILENET_SMALL, bertBase, BERT_SMALL, gpt2, GPT2_SMALL, tinyCnn } from '../../bench/models/zoo.js';
import { kiln } from '../helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-compare-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
afterEach(() => overrideCpuKernelForTesting('Softmax'));

const t32 = (dims: number[], v: number[]) => TensorData.fromNumbers('float32', dims, v);

/** x[2,8] -> MatMul -> Relu -> Softmax -> ReduceSum -> Transpose -> MatMul */
function chainModel(): Model {
  const r = seededRandom(3);
  const b = new GraphBuilder('chain');
  const x = b.input('x', 'float32', [2, 8]);
  let h = b.op('MatMul', [x, b.initializer('w1', randomTensor(r, [8, 8], 0.3))], {}, 'fc1');
  h = b.op('Relu', [h], {}, 'relu1');
  h = b.op('Softmax', [h], { axis: -1 }, 'softmax');
  h = b.op('ReduceSum', [h, b.initializer('ax', TensorData.fromBigInts('int64', [1], [1n]))], { keepdims: 1 }, 'sum');
  h = b.op('Transpose', [h], { perm: [1, 0] }, 'tr');
  h = b.op('MatMul', [h, b.initializer('w2', randomTensor(r, [2, 4], 0.3))], {}, 'fc2');
  b.output(h, { kind: 'tensor', dtype: 'float32', shape: [1, 4] });
  return b.model(17);
}

/** A Softmax kernel that is off by 0.01 in one element: the fault the per-layer comparison must find. */
function breakSoftmax(): void {
  overrideCpuKernelForTesting('Softmax', (n, ins) => {
    const [y] = callKernel(n, '', 'Softmax', 13, ins, n.attrs) as TensorData[];
    const d = Float32Array.from(y.data as Float32Array);
    d[3] += 0.01;
    return [new TensorData('float32', y.dims, d)];
  });
}

describe('compareTensors', () => {
  it('fails an element only when it exceeds both atol and rtol (elemwise)', () => {
    const ref = t32([4], [1, 100, 0, -2]);
    const ok = compareTensors('y', ref, t32([4], [1, 100.0005, 0, -2]));
    expect(ok.passed).toBe(true); // abs 5e-4 > atol, but rel 5e-6 <= rtol
    const bad = compareTensors('y', ref, t32([4], [1, 100, 1e-3, -2]));
    expect(bad.passed).toBe(false);
    expect(bad.failing).toBe(1);
    expect(bad.worst).toMatchObject({ index: [2], reference: 0 });
    expect(bad.abs.max).toBeCloseTo(1e-3, 9);
    expect(bad.rel.max).toBe(Infinity);
  });

  it('statistic modes compare max/mean/median/quantile errors against each tolerance', () => {
    const ref = t32([2, 5], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    const v = t32([2, 5], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1.5]);
    const tol = { ...DEFAULT_TOLERANCE, atol: 1e-3, rtol: 1e-3 };
    expect(compareTensors('y', ref, v, { ...tol, stat: 'max' }).passed).toBe(false);
    expect(compareTensors('y', ref, v, { ...tol, stat: 'median' }).passed).toBe(true);
    expect(compareTensors('y', ref, v, { ...tol, stat: 'mean' }).passed).toBe(false); // mean 0.05
    expect(compareTensors('y', ref, v, { ...tol, stat: 'quantile', quantile: 0.5 }).passed).toBe(true);
    expect(compareTensors('y', ref, v, tol).worst?.index).toEqual([1, 4]);
  });

  it('treats NaN against a number as a failure, NaN against NaN and equal infinities as equal, and explains shape mismatches', () => {
    expect(compareTensors('y', t32([3], [NaN, Infinity, 1]), t32([3], [NaN, Infinity, 1])).passed).toBe(true);
    expect(compareTensors('y', t32([2], [1, 2]), t32([2], [NaN, 2])).passed).toBe(false);
    const m = compareTensors('y', t32([2, 3], [1, 2, 3, 4, 5, 6]), t32([3, 3], new Array(9).fill(0)));
    expect(m.passed).toBe(false);
    expect(m.mismatch).toMatch(/shapes differ: reference float32\[2, 3\], this runner float32\[3, 3\]/);
  });
});

describe('compareModel', () => {
  const zoo: [string, () => Model][] = [
    ['resnet-small', () => resnet50(RESNET_SMALL)], ['mobilenet-small', () => mobilenetV2(MOBILENET_SMALL)],
    ['bert-small', () => bertBase(BERT_SMALL)], ['gpt2-small', () => gpt2(GPT2_SMALL)],
  ];
  for (const [name, make] of zoo) {
    it(`${name}: kiln-ref, kiln-cpu and onnxruntime agree at the default tolerances (fp32)`, async () => {
      const r = await compareModel(make(), { runners: ['kiln-ref', 'kiln-cpu', 'onnxruntime'] });
      expect(r.runners.map((x) => x.error)).toEqual([undefined, undefined, undefined]);
      for (const p of r.pairs) for (const o of p.outputs) expect(o.abs.max, `${p.runner} ${o.output}`).toBeLessThan(1e-5);
      expect(r.passed, formatCompareReport(r)).toBe(true);
    });
  }

  it('--mark-all names the first layer a faulty kernel breaks, against the reference kernels and onnxruntime', async () => {
    breakSoftmax();
    const r = await compareModel(chainModel(), { runners: ['kiln-ref', 'kiln-cpu', 'onnxruntime'], markAll: true });
    expect(r.passed).toBe(false);
    const [cpu, ort] = r.pairs;
    expect(cpu.firstDivergence).toMatchObject({ layer: 'softmax', opType: 'Softmax', tensor: 'softmax_out0' });
    // fc1 was fused with its Relu, so its output name now holds another value: it is not compared
    expect(cpu.layers!.map((l) => l.tensor)).not.toContain('fc1_out0');
    expect(ort.passed).toBe(true);
    expect(ort.layers!.length).toBe(6);
    expect(formatCompareReport(r)).toMatch(/First layer that diverges: 'softmax' \(Softmax\)/);
  });

  it('compares against golden outputs saved by an earlier run', async () => {
    const golden = path.join(tmp, 'golden.npz');
    const first = await compareModel(chainModel(), { runners: ['kiln-ref'], saveOutputs: golden });
    expect(first.passed).toBe(true);
    expect(Object.keys(readTensors(golden))).toEqual(['fc2_out0']);
    expect((await compareModel(chainModel(), { runners: ['kiln-cpu'], loadOutputs: golden })).passed).toBe(true);
    breakSoftmax();
    const bad = await compareModel(chainModel(), { runners: ['kiln-cpu'], loadOutputs: golden });
    expect(bad.passed).toBe(false);
    expect(bad.pairs[0].reference).toMatch(/golden outputs/);
  });

  it('per-output tolerances and loaded inputs', async () => {
    const inputs = path.join(tmp, 'in.json');
    fs.writeFileSync(inputs, JSON.stringify({ x: { dtype: 'float32', shape: [2, 8], data: new Array(16).fill(0.5) } }));
    breakSoftmax();
    const loose = await compareModel(chainModel(), { loadInputs: [inputs], atol: { byOutput: { fc2_out0: 0.1 } } });
    expect(loose.inputs).toEqual([{ name: 'x', dtype: 'float32', shape: [2, 8] }]);
    expect(loose.passed).toBe(true);
    expect(loose.pairs[0].outputs[0].tolerance.atol).toBe(0.1);
  });

  it('explains mismatched input names and shapes instead of crashing', async () => {
    const m = chainModel();
    const renamed = chainModel();
    renamed.graph.inputs[0].name = 'y';
    renamed.graph.nodes[0].inputs[0] = 'y';
    const plan = path.join(tmp, 'renamed.plan');
    await (await build(renamed)).save(plan);
    const r = await compareModel(m, { runners: ['kiln-ref', `plan:${plan}`] });
    expect(r.passed).toBe(false);
    expect(r.runners[1].error).toMatch(/inputs do not match: it needs input 'y' \(float32\[2, 8\]\), which the model .* does not have; .* has input 'x', which this runner does not have/);
    const wrongShape = await compareModel(m, { inputs: { x: t32([3, 8], new Array(24).fill(0)) } });
    expect(wrongShape.runners[0].error).toMatch(/input 'x' has shape \[2, 8\] here, but the data has \[3, 8\]/);
    expect(formatCompareReport(wrongShape)).toMatch(/FAILED/);
  });

  it('lists kiln-cuda as unavailable with the backend\'s reason', async () => {
    const r = await compareModel(chainModel(), { runners: ['kiln-ref', 'kiln-cuda'] });
    if (!r.runners[1].error) return; // a machine with a working CUDA backend: nothing unavailable to report
    expect(r.runners[1].error).toMatch(/runner 'kiln-cuda' is unavailable here: /);
    expect(r.passed).toBe(false);
  });

  it('--gen-script uses only names the public API exports', () => {
    const script = compareScript('model.onnx', { runners: ['kiln-ref', 'kiln-cpu'], atol: 1e-4 });
    const names = /import \{([^}]+)\} from 'kiln'/.exec(script)![1].split(',').map((s) => s.trim());
    for (const n of names) expect(api, n).toHaveProperty(n);
    expect(script).toMatch(/"atol": 0.0001/);
  });
});

describe('kiln compare CLI', () => {
  it('passes on the example model, fails (exit 1) when tolerances cannot hold, and prints a script', async () => {
    const ok = await kiln('compare', 'examples/tiny-cnn.onnx', '--runner', 'kiln-ref', '--runner', 'kiln-cpu', '--shapes', 'input:2x3x32x32');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/probabilities: PASSED \(elemwise, atol 1e-5, rtol 1e-5; 20 elements\)/);
    expect(ok.stdout).toMatch(/abs error histogram:/);
    expect(ok.stdout).toMatch(/PASSED \| All outputs matched/);
    const bad = await kiln('compare', 'examples/tiny-cnn.onnx', '--runner', 'kiln-ref', '--runner', 'kiln-cpu:fp16', '--atol', '0', '--rtol', '0', '--mark-all');
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/FAILED \| Mismatched outputs: probabilities \(kiln-cpu:fp16\)/);
    expect(bad.stdout).toMatch(/First layer that diverges: 'pool1' \(MaxPool\)/);
  });
});

describe('kiln inspect model/capability/data', () => {
  it('lists layers with inferred types and attributes, and weights with statistics', () => {
    const m = tinyCnn();
    const layers = modelLayers(m, true);
    expect(layers[0]).toMatchObject({ name: 'conv1', opType: 'Conv', outputs: [{ name: 'conv1_out0', type: 'float32[n,16,32,32]' }] });
    expect(layers[0].attrs).toMatchObject({ kernel_shape: '[3,3]' });
    const w = modelWeights(m).find((x) => x.name === 'fc.weight')!;
    expect(w).toMatchObject({ dtype: 'float32', shape: [10, 32], bytes: 1280 });
  });

  it('capability: per op and per backend, with the reason a backend cannot run', () => {
    const b = new GraphBuilder('cap');
    b.input('x', 'float32', [2]);
    b.output(b.op('Relu', ['x'], {}, 'r'));
    b.output(b.node('Frobnicate', ['x'], {}, { name: 'f', domain: 'com.example' })[0]);
    const c = inspectCapability(b.model(17));
    const relu = c.ops.find((o) => o.op === 'Relu')!;
    expect(relu.providers.cpu.status).toBe('supported');
    const custom = c.ops.find((o) => o.op === 'com.example:Frobnicate')!;
    expect(custom.providers.cpu).toMatchObject({ status: 'unsupported' });
    expect(custom.providers.cpu.detail).toMatch(/Frobnicate/);
    if (!c.backends.find((x) => x.name === 'cuda')!.available) expect(relu.providers.cuda.status).toBe('unavailable');
    expect(formatCapability(c)).toMatch(/Why not:\n {2}com.example:Frobnicate on cpu: unsupported/);
  });

  it('data: shape, dtype, statistics and histogram of stored tensors', () => {
    const f = path.join(tmp, 'd.npz');
    writeTensors(f, { a: t32([2, 2], [1, 2, 3, NaN]) });
    const s = summarizeTensor('a', readTensors(f).a);
    expect(s).toMatchObject({ dtype: 'float32', shape: [2, 2], stats: { min: 1, max: 3, mean: 2, nan: 1 } });
    expect(s.histogram!.counts.reduce((x, y) => x + y, 0)).toBe(3);
  });

  it('CLI: inspect data and inspect model --show layers --json', async () => {
    const d = path.join(tmp, 'd.json');
    fs.writeFileSync(d, JSON.stringify({ v: [[1, 2], [3, 4]] }));
    const [r, m] = await Promise.all([kiln('inspect', 'data', d), kiln('inspect', 'model', 'examples/tiny-cnn.onnx', '--show', 'layers', '--json')]);
    expect(r.stdout).toMatch(/v: float32\[2, 2\]\n {2}min 1, max 4, mean 2.5/);
    expect(JSON.parse(m.stdout).layers).toHaveLength(11);
  });
});

