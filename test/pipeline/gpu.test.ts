// The cuda pipeline's host side everywhere (EXIF orientation reading, option errors, the fused kernel compiling for
// sm_90 where nvcc is), and GPU against CPU output where a CUDA device is found (skipped elsewhere; the full check
// is bench/pipeline/check-gpu.ts on the GPU machine).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileSm90, hasNvcc, kernelResources } from '../helpers/nvcc.js';
import { Pipeline, hostTensor, type PipelineSpec } from '../../src/pipeline/index.js';
import { jpegOrientation } from '../../src/pipeline/gpu.js';
import { imageKernel, type ImageKernelArgs } from '../../src/backends/cuda/codegen/image.js';
import { cudaBackend } from '../../src/backends/cuda/index.js';

let dir: string;
const pattern = (w: number, h: number) => Buffer.from(Array.from({ length: w * h * 3 }, (_, i) => (i * 7 + ((i / 3) % 13) * 11) & 255));
const jpeg = (w: number, h: number) => sharp(pattern(w, h), { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 95 });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pipe-gpu-'));
  for (let o = 1; o <= 8; o++) await jpeg(40, 30).withMetadata({ orientation: o }).toFile(path.join(dir, `orient${o}.jpg`));
  await jpeg(40, 30).toFile(path.join(dir, 'plain.jpg'));
  await sharp(pattern(50, 44), { raw: { width: 50, height: 44, channels: 3 } }).png().toFile(path.join(dir, 'plain.png'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('cuda pipeline: host side', () => {
  it('reads the EXIF orientation of JPEGs (1 without EXIF, and for other formats)', () => {
    for (let o = 1; o <= 8; o++) expect(jpegOrientation(fs.readFileSync(path.join(dir, `orient${o}.jpg`)))).toBe(o);
    expect(jpegOrientation(fs.readFileSync(path.join(dir, 'plain.jpg')))).toBe(1);
    expect(jpegOrientation(fs.readFileSync(path.join(dir, 'plain.png')))).toBe(1);
    expect(jpegOrientation(new Uint8Array([0xff, 0xd8, 0xff, 0xe1, 0, 40, 1, 2]))).toBe(1); // cut short: no crash
  });

  it('rejects unknown devices and specs without one output size', async () => {
    await expect(Pipeline.create({ crop: { size: 8 } }, { device: 'tpu' })).rejects.toThrow(/device 'tpu' is not one of cpu, cuda, cuda:N/);
    await expect(Pipeline.create({ resize: { size: 8 } }, { device: 'cuda' })).rejects.toThrow(/needs a crop or an exact resize/);
  });

  it.skipIf(cudaBackend.availability().ok)('says why when there is no GPU', async () => {
    await expect(Pipeline.create({ crop: { size: 8 } }, { device: 'cuda' })).rejects.toThrow(/cuda pipeline cannot use GPU 0/);
  });
});

describe.skipIf(!hasNvcc)('cuda pipeline: the fused kernel compiles for sm_90', () => {
  it('compiles every channel count, layout and dtype without warnings or spills', () => {
    const variants: ImageKernelArgs[] = [
      { height: 224, width: 224, channels: 3, layout: 'NCHW', dtype: 'float32', normalize: { scale: [0.017, 0.0175, 0.0174], shift: [-2.1, -2.03, -1.8] } },
      { height: 7, width: 5, channels: 1, layout: 'NHWC', dtype: 'float16', normalize: { scale: [1 / 255], shift: [0] } },
      { height: 9, width: 9, channels: 4, layout: 'NHWC', dtype: 'uint8' },
    ];
    const { status, output } = compileSm90(variants.map((v, i) => [`v${i}`, imageKernel(v).source]));
    expect(status, output).toBe(0);
    expect(output).not.toMatch(/warning/i);
    expect(kernelResources(output).map((k) => k[2])).toEqual(['0', '0', '0']);
  });
});

describe.skipIf(!cudaBackend.availability().ok)('cuda pipeline on the GPU', () => {
  it('matches the CPU pipeline on PNG (area resize: exact) and JPEG (within the decoder tolerance)', async () => {
    const spec: PipelineSpec = { resize: { mode: 'exact', width: 24, height: 20, interpolation: 'area' }, dtype: 'uint8', layout: 'NHWC' };
    const files = ['plain.png', 'orient6.jpg'].map((f) => path.join(dir, f));
    const out: Record<string, Uint8Array> = {};
    for (const device of ['cpu', 'cuda']) {
      const p = await Pipeline.create(spec, { device, workers: 0 });
      out[device] = (await hostTensor(await p.process(files)))!.data as Uint8Array;
      await p.close();
    }
    const n = 24 * 20 * 3;
    for (let k = 0; k < n; k++) expect(Math.abs(out.cpu[k] - out.cuda[k])).toBeLessThanOrEqual(1);
    const jpegDiff = out.cpu.subarray(n).reduce((s, v, k) => s + Math.abs(v - out.cuda[n + k]), 0) / n;
    expect(jpegDiff).toBeLessThan(3);
  });
});
