// `kiln build --int8`: quantize in memory with `kiln quantize`'s defaults, then build; flags are checked.
import { describe, it, expect, afterAll } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { kiln } from '../helpers/cli.js';
import { findCompiler } from '../../src/backends/cpu/compiler.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-int8-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('kiln build --int8', () => {
  it('--calibration-random: warns, quantizes, builds int8 layers that run', async () => {
    const plan = path.join(tmp, 'tiny.int8.plan');
    const b = await kiln('build', '--onnx', 'examples/tiny-cnn.onnx', '--int8', '--calibration-random', '8', '--shapes', 'input:1x3x32x32', '--save-engine', plan);
    expect(b.code).toBe(0);
    expect(b.stderr).toMatch(/warning: calibrating on 8 random samples/);
    expect(b.stdout).toMatch(/Quantized 3 layers to int8 \(8 calibration samples\); output cosine vs fp32 \d\.\d{4}/);
    const j = JSON.parse((await kiln('inspect', plan, '--layers', '--json')).stdout) as { layers: { opType: string; tactic: string }[] };
    expect(j.layers.filter((l) => l.opType === 'QConv')).toHaveLength(2);
    if (findCompiler()) expect(j.layers.filter((l) => l.tactic.includes('-int8-'))).toHaveLength(3);
    const run = await kiln('run', '--model', plan, '--random');
    expect(run.stdout).toMatch(/probabilities\s+float32\s+\[1,10\]/);
  });

  it('refuses --int8 without calibration inputs, and calibration flags without --int8', async () => {
    const a = await kiln('build', '--onnx', 'examples/tiny-cnn.onnx', '--int8');
    expect(a.code).toBe(1);
    expect(a.stderr).toMatch(/--int8 needs calibration inputs[\s\S]*--calibration-data/);
    const b = await kiln('build', '--onnx', 'examples/tiny-cnn.onnx', '--calibration-random');
    expect(b.code).toBe(1);
    expect(b.stderr).toMatch(/only apply with --int8/);
  });
});
