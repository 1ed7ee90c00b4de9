// The CPU pipeline against a straightforward reference: sharp's decode/resize, then plain JavaScript for orientation,
// crop, area resize, normalize and layout, on small generated images.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Pipeline, pipelineModel, type PipelineSpec } from '../../src/pipeline/index.js';
import { float16ToFloat } from '../../src/ir/dtype.js';

const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];
let dir: string;

/** A deterministic, non-symmetric pattern so that flips, rotations and crops show. */
function pattern(w: number, h: number, c: number, salt = 0): Buffer {
  const b = Buffer.alloc(w * h * c);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < c; k++) b[(y * w + x) * c + k] = (x * 7 + y * 13 + k * 60 + salt * 17 + ((x * y) % 11) * 5) & 255;
  return b;
}
const raw = (w: number, h: number, c: 1 | 2 | 3 | 4, salt = 0) => sharp(pattern(w, h, c, salt), { raw: { width: w, height: h, channels: c } });

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kiln-pipe-'));
  const w = (name: string, p: Promise<unknown>) => p.then(() => name);
  await Promise.all([
    w('rgb.jpg', raw(37, 23, 3).jpeg({ quality: 95 }).toFile(path.join(dir, 'rgb.jpg'))),
    w('grey.png', raw(31, 19, 1, 1).png().toFile(path.join(dir, 'grey.png'))),
    w('alpha.png', raw(29, 33, 4, 2).png().toFile(path.join(dir, 'alpha.png'))),
    w('greyalpha.png', raw(27, 21, 2, 3).png().toFile(path.join(dir, 'greyalpha.png'))),
    w('pic.webp', raw(33, 41, 3, 4).webp({ lossless: true }).toFile(path.join(dir, 'pic.webp'))),
  ]);
  const good = await raw(37, 23, 3).jpeg().toBuffer();
  fs.writeFileSync(path.join(dir, 'corrupt.jpg'), Buffer.concat([good.subarray(0, 20), Buffer.from('garbage'.repeat(20))]));
  fs.writeFileSync(path.join(dir, 'truncated.jpg'), good.subarray(0, good.length >> 1));
  for (let o = 1; o <= 8; o++) await raw(7, 5, 3, o).jpeg({ quality: 100 }).withMetadata({ orientation: o }).toFile(path.join(dir, `orient${o}.jpg`));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * sharp's decode with channels fixed as the spec asks, then (a second sharp call, so that a dropped alpha channel
 * plays no part in it, as in torchvision's RGB decode) its bilinear resize; HWC uint8.
 */
async function decodeRef(file: string, channels: 1 | 3 | 4, resize?: { size: number }) {
  let img = sharp(file).autoOrient();
  img = channels === 1 ? img.greyscale() : channels === 3 ? img.removeAlpha() : img.ensureAlpha();
  if (resize) {
    const fixed = await img.raw().toBuffer({ resolveWithObject: true });
    img = sharp(fixed.data, { raw: { width: fixed.info.width, height: fixed.info.height, channels: fixed.info.channels } })
      .resize({ width: resize.size, height: resize.size, fit: 'outside', kernel: 'linear' });
  }
  const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
  return { data, w: info.width, h: info.height, c: info.channels };
}

/** Plain-JS center crop + (x/255 - mean)/std in CHW. */
function normalizeRef(img: { data: Buffer; w: number; h: number; c: number }, cw: number, ch: number, mean: number[], std: number[]): number[] {
  const x0 = Math.round((img.w - cw) / 2), y0 = Math.round((img.h - ch) / 2);
  const out: number[] = [];
  for (let c = 0; c < img.c; c++) for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) out.push((img.data[((y0 + y) * img.w + x0 + x) * img.c + c] / 255 - mean[c]) / std[c]);
  return out;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

async function oneBatch(spec: PipelineSpec, source: string[], workers = 0) {
  const p = await Pipeline.create(spec, { workers });
  try {
    return await p.process(source);
  } finally {
    await p.close();
  }
}

const files = (...names: string[]) => names.map((n) => path.join(dir, n));

describe('CPU pipeline vs reference', () => {
  it('matches sharp resize + JS normalize within 1/255 on odd sizes, greyscale, alpha and WebP', async () => {
    const spec: PipelineSpec = { resize: { size: 20 }, crop: { width: 17, height: 15 }, normalize: { mean: MEAN, std: STD }, batch: { size: 5 } };
    const names = ['rgb.jpg', 'grey.png', 'alpha.png', 'greyalpha.png', 'pic.webp'];
    for (const workers of [0, 1]) {
      const b = await oneBatch(spec, files(...names), workers);
      expect(b.errors).toEqual([]);
      expect(b.tensor!.dims).toEqual([5, 3, 15, 17]);
      const got = b.tensor!.data as Float32Array;
      for (let i = 0; i < names.length; i++) {
        const ref = normalizeRef(await decodeRef(path.join(dir, names[i]), 3, { size: 20 }), 17, 15, MEAN, STD);
        expect(maxDiff(got.subarray(i * ref.length, (i + 1) * ref.length), ref), names[i]).toBeLessThanOrEqual(1 / 255);
      }
    }
  });

  it('greyscale (1 channel) and RGBA (4 channels) outputs, NHWC uint8 and float16', async () => {
    const grey = await oneBatch({ decode: { channels: 1 }, crop: { size: 9 }, normalize: { mean: 0.5, std: 0.25 } }, files('alpha.png'));
    expect(grey.tensor!.dims).toEqual([1, 1, 9, 9]);
    expect(maxDiff(grey.tensor!.data as Float32Array, normalizeRef(await decodeRef(path.join(dir, 'alpha.png'), 1), 9, 9, [0.5], [0.25]))).toBeLessThanOrEqual(1 / 255);

    const rgba = await oneBatch({ decode: { channels: 4 }, crop: { size: 6 }, layout: 'NHWC', dtype: 'uint8' }, files('grey.png'));
    const ref = await decodeRef(path.join(dir, 'grey.png'), 4);
    expect(rgba.tensor!.type).toBe('uint8');
    expect(rgba.tensor!.dims).toEqual([1, 6, 6, 4]);
    const chw = normalizeRef(ref, 6, 6, [0, 0, 0, 0], [1 / 255, 1 / 255, 1 / 255, 1 / 255]);
    const hwc = Array.from({ length: chw.length }, (_, i) => chw[(i % 4) * 36 + Math.floor(i / 4)]);
    expect(maxDiff(rgba.tensor!.data as Uint8Array, hwc)).toBeLessThanOrEqual(1);

    const spec: PipelineSpec = { crop: { size: 10 }, normalize: { mean: MEAN, std: STD } };
    const f32 = (await oneBatch(spec, files('rgb.jpg'))).tensor!.data as Float32Array;
    const f16 = await oneBatch({ ...spec, dtype: 'float16' }, files('rgb.jpg'));
    expect(f16.tensor!.type).toBe('float16');
    const back = Array.from(f16.tensor!.data as Uint16Array, float16ToFloat);
    expect(maxDiff(back, f32)).toBeLessThanOrEqual(2e-3);
  });

  it('applies EXIF orientations 1-8 as a plain-JS rotation of the stored pixels', async () => {
    for (let o = 1; o <= 8; o++) {
      const file = path.join(dir, `orient${o}.jpg`);
      expect((await sharp(file).metadata()).orientation).toBe(o);
      const stored = await sharp(file).raw().toBuffer({ resolveWithObject: true });
      const W = stored.info.width, H = stored.info.height;
      const swap = o >= 5;
      const [dw, dh] = swap ? [H, W] : [W, H];
      const src = (y: number, x: number): [number, number] =>
        [[y, x], [y, W - 1 - x], [H - 1 - y, W - 1 - x], [H - 1 - y, x], [x, y], [H - 1 - x, y], [H - 1 - x, W - 1 - y], [x, W - 1 - y]][o - 1] as [number, number];
      const ref: number[] = [];
      for (let y = 0; y < dh; y++) for (let x = 0; x < dw; x++) for (let c = 0; c < 3; c++) { const [sy, sx] = src(y, x); ref.push(stored.data[(sy * W + sx) * 3 + c]); }
      const b = await oneBatch({ layout: 'HWC', dtype: 'uint8' }, [file]);
      expect(b.tensor!.dims, `orientation ${o}`).toEqual([dh, dw, 3]);
      expect(maxDiff(b.tensor!.data as Uint8Array, ref), `orientation ${o}`).toBeLessThanOrEqual(1);
    }
  });

  it('area resize matches a naive pixel-area average', async () => {
    const b = await oneBatch({ resize: { width: 10, height: 7, interpolation: 'area' }, layout: 'HWC', dtype: 'uint8' }, files('pic.webp'));
    const { data, info } = await sharp(path.join(dir, 'pic.webp')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const [W, H, ow, oh] = [info.width, info.height, 10, 7];
    const sx = W / ow, sy = H / oh;
    const ref: number[] = [];
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) {
        for (let c = 0; c < 3; c++) {
          let acc = 0;
          for (let v = 0; v < H; v++) {
            const wy = Math.max(0, Math.min(v + 1, (y + 1) * sy) - Math.max(v, y * sy));
            for (let u = 0; u < W; u++) acc += wy * Math.max(0, Math.min(u + 1, (x + 1) * sx) - Math.max(u, x * sx)) * data[(v * W + u) * 3 + c];
          }
          ref.push(acc / (sx * sy));
        }
      }
    }
    expect(maxDiff(b.tensor!.data as Uint8Array, ref)).toBeLessThanOrEqual(0.5 + 1e-3);
  });

  it('flips, and seeds random crops and flips per item (same in threads and workers)', async () => {
    const h = await oneBatch({ crop: { size: 8 }, flip: { horizontal: true }, layout: 'HWC', dtype: 'uint8' }, files('rgb.jpg'));
    const n = await oneBatch({ crop: { size: 8 }, layout: 'HWC', dtype: 'uint8' }, files('rgb.jpg'));
    const hd = h.tensor!.data as Uint8Array, nd = n.tensor!.data as Uint8Array;
    for (let y = 0; y < 8; y++) for (let x = 0; x < 8; x++) for (let c = 0; c < 3; c++) expect(hd[(y * 8 + x) * 3 + c]).toBe(nd[(y * 8 + 7 - x) * 3 + c]);

    const spec: PipelineSpec = { crop: { size: 6, mode: 'random' }, flip: { horizontal: 'random' }, layout: 'NHWC', dtype: 'uint8', seed: 7, batch: { size: 4 } };
    const src = files('rgb.jpg', 'rgb.jpg', 'rgb.jpg', 'rgb.jpg');
    const a = await oneBatch(spec, src, 0), b = await oneBatch(spec, src, 1), c = await oneBatch({ ...spec, seed: 8 }, src, 0);
    expect(Array.from(a.tensor!.data as Uint8Array)).toEqual(Array.from(b.tensor!.data as Uint8Array));
    expect(Array.from(a.tensor!.data as Uint8Array)).not.toEqual(Array.from(c.tensor!.data as Uint8Array));
    // every random crop is some (possibly mirrored) 6x6 window of the image
    const full = await sharp(src[0]).raw().toBuffer({ resolveWithObject: true });
    const W = full.info.width, H = full.info.height;
    const items = a.tensor!.data as Uint8Array;
    const windows = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const item = items.subarray(i * 108, (i + 1) * 108);
      let found = '';
      for (let y0 = 0; y0 <= H - 6 && !found; y0++) {
        for (let x0 = 0; x0 <= W - 6 && !found; x0++) {
          for (const mirror of [false, true]) {
            let same = true;
            for (let k = 0; k < 108 && same; k++) {
              const y = Math.floor(k / 18), x = Math.floor(k / 3) % 6, ch = k % 3;
              same = item[k] === full.data[((y0 + y) * W + x0 + (mirror ? 5 - x : x)) * 3 + ch];
            }
            if (same) { found = `${x0},${y0},${mirror}`; break; }
          }
        }
      }
      expect(found, `item ${i}`).not.toBe('');
      windows.add(found);
    }
    expect(windows.size).toBeGreaterThan(1);
  });
});

describe('batching, errors and back-pressure', () => {
  const spec: PipelineSpec = { resize: { size: 12 }, crop: { size: 10 }, normalize: { mean: MEAN, std: STD }, batch: { size: 3 } };
  const good = () => files('rgb.jpg', 'grey.png', 'alpha.png', 'greyalpha.png', 'pic.webp', 'orient1.jpg', 'orient6.jpg');

  it('batches in source order; the last batch is short unless dropLast', async () => {
    const p = await Pipeline.create(spec, { workers: 0 });
    const sizes: number[] = [], names: string[] = [];
    for await (const b of p.batches(good())) { sizes.push(b.tensor!.dims[0]); names.push(...b.names); }
    expect(sizes).toEqual([3, 3, 1]);
    expect(names).toEqual(good());
    await p.close();
    const q = await Pipeline.create({ ...spec, batch: { size: 3, dropLast: true } }, { workers: 0 });
    const sizes2: number[] = [];
    for await (const b of q.batches(good())) sizes2.push(b.tensor!.dims[0]);
    expect(sizes2).toEqual([3, 3]);
    await q.close();
  });

  it('a corrupt, truncated or missing image fails alone, named; the rest of its batch goes on', async () => {
    for (const workers of [0, 1]) {
      const p = await Pipeline.create({ ...spec, batch: { size: 4 } }, { workers });
      const src = files('rgb.jpg', 'corrupt.jpg', 'grey.png', 'truncated.jpg', 'missing.jpg', 'pic.webp');
      const batches = [];
      for await (const b of p.batches(src)) batches.push(b);
      expect(batches.map((b) => b.tensor?.dims[0])).toEqual([2, 1]);
      expect(batches[0].names).toEqual(files('rgb.jpg', 'grey.png'));
      expect(batches[0].indices).toEqual([0, 2]);
      const errs = batches.flatMap((b) => b.errors);
      expect(errs.map((e) => e.index)).toEqual([1, 3, 4]);
      expect(errs[0].message).toMatch(/corrupt\.jpg: cannot decode the image/);
      expect(errs[1].message).toMatch(/truncated\.jpg: cannot decode the image/);
      expect(errs[2].message).toMatch(/missing\.jpg: cannot decode the image/);
      expect(p.stats.failed).toBe(3);
      await p.close();
    }
    const strict = await Pipeline.create(spec, { workers: 0, onError: 'throw' });
    await expect(strict.process(files('rgb.jpg', 'corrupt.jpg'))).rejects.toThrow(/corrupt\.jpg/);
    await strict.close();
  });

  it('an image smaller than the crop is an error for that item', async () => {
    const b = await oneBatch({ crop: { size: 30 } }, files('rgb.jpg', 'pic.webp'));
    expect(b.names).toEqual(files('pic.webp'));
    expect(b.errors[0].message).toMatch(/rgb\.jpg: the image is 37×23 after resize, smaller than the 30×30 crop/);
  });

  it('dispatches at most `prefetch` batches ahead of a consumer that stalls', async () => {
    let pulled = 0;
    async function* slowSource() {
      for (let i = 0; i < 30; i++) { pulled++; yield path.join(dir, 'rgb.jpg'); }
    }
    const p = await Pipeline.create(spec, { workers: 0, prefetch: 2 });
    const it = p.batches(slowSource());
    for (let k = 0; k < 3; k++) {
      await it.next();
      await new Promise((r) => setTimeout(r, 50)); // the consumer is busy; nothing more may be started meanwhile
      expect(p.stats.delivered).toBe(3 * (k + 1));
      expect(p.stats.dispatched - p.stats.delivered).toBeLessThanOrEqual(2 * 3);
      expect(pulled).toBeLessThanOrEqual(3 * (k + 1) + 2 * 3);
    }
    await it.return(undefined);
    await p.close();
    const seq = await Pipeline.create(spec, { workers: 0, prefetch: 0 });
    const it0 = seq.batches(slowSource());
    await it0.next();
    await new Promise((r) => setTimeout(r, 20));
    expect(seq.stats.dispatched).toBe(3);
    await it0.return(undefined);
    await seq.close();
  });

  it('a worker that dies fails its own items, named, and is replaced', async () => {
    const p = await Pipeline.create(spec, { workers: 2 });
    const src = Array.from({ length: 12 }, () => path.join(dir, 'pic.webp'));
    const pending = p.process(src);
    await p.workers!.threads[0].terminate();
    const b = await pending;
    expect(b.errors.length).toBeGreaterThan(0);
    for (const e of b.errors) expect(e.message).toMatch(/pic\.webp: the pipeline worker exited with code 1 while processing this item/);
    expect(b.names.length + b.errors.length).toBe(12);
    const again = await p.process(src);
    expect(again.errors).toEqual([]);
    expect(p.workers!.threads.length).toBe(2);
    await p.close();
  });
});

describe('pipelineModel', () => {
  it('takes encoded images as BYTES and returns one preprocessed batch', async () => {
    const m = await pipelineModel({ resize: { size: 12 }, crop: { size: 10 }, normalize: { mean: MEAN, std: STD } }, { workers: 0 });
    expect(m.inputs).toEqual([{ name: 'INPUT', datatype: 'BYTES', type: 'string', shape: [-1, 1], data_type: 'TYPE_STRING', dims: [1] }]);
    expect(m.outputs).toEqual([{ name: 'OUTPUT', datatype: 'FP32', type: 'float32', shape: [-1, 3, 10, 10], data_type: 'TYPE_FP32', dims: [3, 10, 10] }]);
    const bytes = files('rgb.jpg', 'pic.webp', 'grey.png').map((f) => fs.readFileSync(f));
    const out = await m.infer({ INPUT: bytes });
    expect(out.OUTPUT.dims).toEqual([3, 3, 10, 10]);
    const ref = await oneBatch({ resize: { size: 12 }, crop: { size: 10 }, normalize: { mean: MEAN, std: STD } }, files('rgb.jpg', 'pic.webp', 'grey.png'));
    expect(Array.from(out.OUTPUT.data as Float32Array)).toEqual(Array.from(ref.tensor!.data as Float32Array));
    const asTensor = await m.infer({ INPUT: { data: bytes.slice(0, 2) } });
    expect(asTensor.OUTPUT.dims).toEqual([2, 3, 10, 10]);
    await expect(m.infer({ INPUT: [bytes[0], Buffer.from('nope')] })).rejects.toThrow(/item 1: cannot decode the image/);
    await expect(m.infer({ IMAGES: bytes })).rejects.toThrow(/input 'INPUT' must be an array of encoded images/);
    await m.close();
  });
});
