// The CLI end to end, as a user runs it.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeNpy } from '../../src/tools/npy.js';
import { kiln } from '../helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('kiln CLI', () => {
  it('run: random inputs, summary table, outputs saved as .npy', async () => {
    const r = await kiln('run', '--model', 'examples/tiny-cnn.onnx', '--random', '--shapes', 'input:2x3x32x32', '--output-dir', tmp);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/probabilities\s+float32\s+\[2,10\]/);
    const t = decodeNpy(fs.readFileSync(path.join(tmp, 'probabilities.npy')));
    expect(t.dims).toEqual([2, 10]);
    expect(Array.from(t.data as Float32Array).slice(0, 10).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  });

  it('run: explains missing inputs and bad files', async () => {
    const r = await kiln('run', '--model', 'examples/tiny-cnn.onnx');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no data for input 'input'[\s\S]*--random/);
    const bad = path.join(tmp, 'bad.onnx');
    fs.writeFileSync(bad, 'garbage');
    expect((await kiln('run', '--model', bad, '--random')).stderr).toMatch(/not a valid ONNX model/);
  });

  it('build then inspect the plan layer by layer', async () => {
    const plan = path.join(tmp, 'tiny.plan');
    const b = await kiln('build', '--onnx', 'examples/tiny-cnn.onnx', '--save-engine', plan, '--shapes', 'input:1x3x32x32');
    expect(b.code).toBe(0);
    expect(b.stdout).toMatch(/nodes: 11 -> 7 layers/);
    const i = await kiln('inspect', plan, '--layers');
    expect(i.stdout).toMatch(/conv1\s+Conv\+bias\+Relu\s+(reference|native-\S+)\s+fp32/);
    const j = JSON.parse((await kiln('inspect', plan, '--layers', '--json')).stdout);
    expect(j.layers).toHaveLength(7);
    const run = await kiln('run', '--model', plan, '--random');
    expect(run.stdout).toMatch(/probabilities\s+float32\s+\[1,10\]/);
  });

  it('inspect: model summary with unsupported ops and their reasons', async () => {
    const model = '../shared/onnx-backend/node/test_ai_onnx_ml_binarizer/model.onnx';
    if (!fs.existsSync(model)) return; // conformance data absent: nothing to inspect
    const r = await kiln('inspect', model);
    expect(r.code).toBe(2);
    expect(r.stdout).toMatch(/Unsupported by Kiln \(1\)[\s\S]*Binarizer of domain 'ai.onnx.ml' is not supported/);
  });
});
