// `kiln bench --pipeline` and `kiln quantize --preprocess` as a user runs them, on the bundled tiny CNN (1x3x32x32).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kiln } from '../helpers/cli.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pipe-cli-'));
const images = path.join(tmp, 'images');
const spec = path.join(tmp, 'spec.json');
const wrong = path.join(tmp, 'wrong.json');

beforeAll(async () => {
  fs.mkdirSync(images);
  for (let i = 0; i < 6; i++) {
    const [w, h] = [41 + i, 37 + 2 * i];
    const px = Buffer.from(Array.from({ length: w * h * 3 }, (_, k) => (k * (7 + i)) & 255));
    await sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg().toFile(path.join(images, `img${i}.jpg`));
  }
  fs.writeFileSync(path.join(images, 'broken.jpg'), 'not a jpeg');
  const base = { resize: { size: 36 }, crop: { size: 32 }, normalize: { mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] }, batch: { size: 2 } };
  fs.writeFileSync(spec, JSON.stringify(base));
  fs.writeFileSync(wrong, JSON.stringify({ ...base, crop: { size: 30 } }));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('pipeline CLI', () => {
  it('bench --pipeline: images/s of the pipeline alone and feeding an engine; bad images reported', async () => {
    const alone = await kiln('bench', '--pipeline', spec, '--images', images, '--pipeline-workers', '0');
    expect(alone.code).toBe(0);
    expect(alone.stdout).toMatch(/Images: 6 in 4 batches \(1 failed\)/);
    expect(alone.stdout).toMatch(/Throughput: [\d.]+ images\/s/);
    expect(alone.stdout).toMatch(/failed: .*broken\.jpg: cannot decode the image/);
    const e2e = JSON.parse((await kiln('bench', '--pipeline', spec, '--images', images, '--onnx', 'examples/tiny-cnn.onnx', '--json', '--pipeline-workers', '1')).stdout);
    expect(e2e.images).toBe(6);
    expect(e2e.workers).toBe(1);
    expect(e2e.inference.min).toBeGreaterThan(0);
  });

  it('quantize --preprocess reads calibration images through the spec', async () => {
    const out = path.join(tmp, 'q.onnx');
    const r = await kiln('quantize', '--onnx', 'examples/tiny-cnn.onnx', '--calibration-data', images, '--preprocess', spec, '-o', out);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/skipped .*broken\.jpg/);
    expect(r.stderr).toMatch(/Read 6 images/);
    expect(r.stdout).toMatch(/calibration 6 samples/);
    expect(fs.existsSync(out)).toBe(true);
    const bad = await kiln('quantize', '--onnx', 'examples/tiny-cnn.onnx', '--calibration-data', images, '--preprocess', wrong, '-o', out);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/input 'input' has shape \[6, 3, 30, 30\], but the model expects \[n, 3, 32, 32\][\s\S]*resize\/crop to its height and width/);
  });
});
