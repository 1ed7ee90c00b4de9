// kiln debug: precision bisection on a model whose fp16 build overflows in one layer, and reduction of a model that a
// deliberately faulty kernel mis-runs.
import { describe, it, expect, afterAll, afterEach } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { GraphBuilder, randomTensor, seededRandom } from '../../src/ir/builder.js';
import { TensorData } from '../../src/ir/tensor.js';
import type { Model } from '../../src/ir/graph.js';
import { callKernel } from '../../src/ops/execute.js';
import { overrideCpuKernelForTesting } from '../../src/backends/cpu/index.js';
import { parseOnnx } from '../../src/onnx/reader.js';
import { saveOnnx, serializeOnnx } from '../../src/onnx/writer.js';
import { parseLayerPrecisions } from '../../src/passes/precision.js';
import { compareModel } from '../../src/tools/compare.js';
import { debugPrecision, debugReduce } from '../../src/tools/debug.js';

const exec = promisify(execFile);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-debug-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
afterEach(() => overrideCpuKernelForTesting('LayerNormalization'));

const TOL = { atol: 1e-2, rtol: 1e-2 };

/** proj (MatMul+Relu) -> big (MatMul with weights ~3e4: > 65504 in fp16) -> LayerNorm (back to ~1) -> head (MatMul). */
function overflowModel(): Model {
  const r = seededRandom(5);
  const b = new GraphBuilder('overflow');
  const x = b.input('x', 'float32', [4, 16]);
  let h = b.op('MatMul', [x, b.initializer('w1', randomTensor(r, [16, 16], 0.3))], {}, 'proj');
  h = b.op('Relu', [h], {}, 'act');
  h = b.op('MatMul', [h, b.initializer('w2', TensorData.fromNumbers('float32', [16, 16], Array.from({ length: 256 }, () => 2e4 + 2e4 * r())))], {}, 'big');
  h = b.op('LayerNormalization', [h, b.initializer('g', TensorData.fromNumbers('float32', [16], new Array(16).fill(1))),
    b.initializer('beta', TensorData.fromNumbers('float32', [16], new Array(16).fill(0)))], { axis: -1 }, 'norm');
  h = b.op('MatMul', [h, b.initializer('w3', randomTensor(r, [16, 8], 0.3))], {}, 'head');
  b.output(h, { kind: 'tensor', dtype: 'float32', shape: [4, 8] });
  return b.model(17);
}

function breakLayerNorm(): void {
  overrideCpuKernelForTesting('LayerNormalization', (n, ins) => {
    const [y] = callKernel(n, '', 'LayerNormalization', 17, ins, n.attrs) as TensorData[];
    const d = Float32Array.from(y.data as Float32Array);
    d[3] += 0.01;
    return [new TensorData('float32', y.dims, d)];
  });
}

describe('debug precision', () => {
  it('the fp16 build overflows, and the comparison says so', async () => {
    const r = await compareModel(overflowModel(), { runners: ['kiln-ref', 'kiln-cpu:fp16'], ...TOL });
    expect(r.passed).toBe(false);
    expect(r.pairs[0].outputs[0].abs.max).toBe(Infinity);
  });

  for (const mode of ['forward', 'reverse'] as const) {
    it(`finds the one layer to keep in fp32 (${mode}), and compare passes with the printed flag`, async () => {
      const res = await debugPrecision(overflowModel(), { precision: 'fp16', mode, ...TOL });
      expect(res.candidates).toEqual(['proj', 'big', 'norm', 'head']); // the norm runs fp16 on its fp16 input (fp32 statistics)
      expect(res.layers).toEqual(['big']);
      expect(res.flag).toBe('--layer-precisions big:fp32');
      const fixed = await compareModel(overflowModel(), {
        runners: ['kiln-ref', 'kiln-cpu:fp16'], layerPrecisions: parseLayerPrecisions(res.flag.split(' ')[1]), ...TOL,
      });
      expect(fixed.passed).toBe(true);
    });
  }

  it('reports when the build already passes', async () => {
    const res = await debugPrecision(overflowModel(), { precision: 'fp16', layerPrecisions: { big: 'fp32' }, ...TOL });
    expect(res.layers).toEqual([]);
    expect(res.checks).toBe(1);
  });

  it('CLI prints the flag', async () => {
    const file = path.join(tmp, 'overflow.onnx');
    await saveOnnx(overflowModel(), file);
    const { stdout } = await exec(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'debug', 'precision', file, '--fp16', '--atol', '1e-2', '--rtol', '1e-2', '--mode', 'reverse']);
    expect(stdout).toMatch(/Keep 1 layer in fp32: big\nUse: --layer-precisions big:fp32/);
  });
});

describe('debug reduce', () => {
  it('reduces a model that a faulty kernel mis-runs to that node, which still fails and loads in onnxruntime', async () => {
    breakLayerNorm();
    const res = await debugReduce(overflowModel());
    expect(res.nodes).toEqual(['norm']);
    expect(res.model.graph.inputs.map((i) => i.name)).toEqual(['big_out0']);
    const again = parseOnnx(serializeOnnx(res.model));
    const r = await compareModel(again, { inputs: Object.fromEntries(res.feeds) });
    expect(r.passed).toBe(false);
    overrideCpuKernelForTesting('LayerNormalization');
    expect((await compareModel(again, { inputs: Object.fromEntries(res.feeds) })).passed).toBe(true);
    const s = await ort.InferenceSession.create(serializeOnnx(res.model));
    expect(s.outputNames).toEqual(['norm_out0']);
  });

  it('linear mode and an error-raising runner', async () => {
    overrideCpuKernelForTesting('LayerNormalization', () => { throw new Error('kernel exploded'); });
    const res = await debugReduce(overflowModel(), { runners: ['kiln-cpu'], mode: 'linear', failRegex: /exploded/ });
    expect(res.nodes).toEqual(['norm']);
  });

  it('refuses a model that does not fail', async () => {
    await expect(debugReduce(overflowModel())).rejects.toThrow(/does not fail/);
  });
});
