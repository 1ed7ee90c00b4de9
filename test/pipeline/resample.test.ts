// The GPU pipeline's resize tables (src/pipeline/resample.ts), applied in TypeScript with the kernel's arithmetic,
// against what the CPU path gets from sharp/libvips: odd sizes, up and down, mixed axes, large box shrinks, the
// area filter, JPEG shrink-on-load, RGBA and EXIF orientation. Tolerances are the GPU check's PNG ones or tighter.
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { Pipeline, hostTensor, type PipelineSpec } from '../../src/pipeline/index.js';
import { resizeArea } from '../../src/pipeline/pack.js';
import { jpegShrinkOnLoad, resampleTaps, resizePlan } from '../../src/pipeline/resample.js';
import { resolveSpec } from '../../src/pipeline/spec.js';

/** Smooth waves plus noise: edges and texture at every scale, deterministic per seed. */
function photo(w: number, h: number, seed: number, noise = 40): Uint8Array {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  const f = [rnd() * 0.1, rnd() * 0.1, rnd() * 0.1], g = [rnd() * 0.1, rnd() * 0.1, rnd() * 0.1];
  const d = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) {
    d[(y * w + x) * 3 + c] = Math.max(0, Math.min(255, Math.round(128 + 90 * Math.sin(f[c] * x + c) * Math.cos(g[c] * y) + (rnd() - 0.5) * noise)));
  }
  return d;
}

function stats(a: Uint8Array, b: Uint8Array) {
  expect(a.length).toBe(b.length);
  const d = Array.from(a, (v, i) => Math.abs(v - b[i])).sort((p, q) => p - q);
  return { mean: d.reduce((s, v) => s + v, 0) / d.length, p999: d[Math.floor(d.length * 0.999)], max: d[d.length - 1] };
}

const resize = (r: object) => resolveSpec({ resize: r }).resize!;

describe('resize taps vs sharp (libvips linear)', () => {
  const cases: [number, number, object][] = [
    [300, 240, { size: 256 }], // enlarge
    [333, 251, { size: 256 }],
    [260, 300, { size: 256 }], // barely shrink
    [260, 300, { size: 160 }],
    [501, 377, { size: 224 }],
    [1001, 777, { size: 224 }], // 7 taps, no box
    [1403, 1399, { size: 224 }], // box 3 (libvips' box average comes out low)
    [2203, 1801, { size: 200 }], // box 4
    [97, 61, { mode: 'exact', width: 31, height: 200 }], // one axis down, the other up
    [300, 240, { mode: 'exact', width: 400, height: 100 }],
    [50, 40, { mode: 'exact', width: 51, height: 40 }], // an unscaled axis shifted by half a pixel
    [31, 17, { mode: 'exact', width: 7, height: 3 }],
    [3, 2, { mode: 'exact', width: 7, height: 5 }],
    [7, 1, { size: 3 }],
  ];
  it.each(cases)('%ix%i %j', async (w, h, r) => {
    const src = photo(w, h, w * 31 + h);
    const rs = resize({ interpolation: 'bilinear', ...r });
    const img = sharp(src, { raw: { width: w, height: h, channels: 3 } });
    const opts = { kernel: 'linear', fastShrinkOnLoad: false } as const;
    const { data, info } = await (rs.mode === 'exact' ? img.resize({ width: rs.width, height: rs.height, fit: 'fill', ...opts })
      : img.resize({ width: rs.size, height: rs.size, fit: 'outside', ...opts })).raw().toBuffer({ resolveWithObject: true });
    const plan = resizePlan(rs, w, h);
    expect([plan.x.size, plan.y.size]).toEqual([info.width, info.height]);
    const d = stats(resampleTaps(src, 3, plan.x, plan.y), data);
    expect(d.mean, JSON.stringify(d)).toBeLessThanOrEqual(0.3);
    expect(d.max, JSON.stringify(d)).toBeLessThanOrEqual(2);
  });

  it('area taps give the CPU path\'s own area resize', () => {
    for (const [w, h, ow, oh] of [[300, 240, 96, 80], [97, 61, 31, 200], [7, 5, 3, 2]]) {
      const src = photo(w, h, 5);
      const plan = resizePlan(resize({ mode: 'exact', width: ow, height: oh, interpolation: 'area' }), w, h);
      expect(stats(resampleTaps(src, 3, plan.x, plan.y), resizeArea({ data: src, width: w, height: h, channels: 3 }, ow, oh).data).max).toBeLessThanOrEqual(1);
    }
  });

  it('a crop window of the tables is the same pixels as the crop of the whole image', () => {
    const src = photo(123, 97, 9);
    const plan = resizePlan(resize({ size: 64 }), 123, 97);
    const whole = resampleTaps(src, 3, plan.x, plan.y);
    const win = resampleTaps(src, 3, plan.x, plan.y, { x0: 10, y0: 7, w: 40, h: 30 });
    for (let y = 0; y < 30; y++) expect(Array.from(win.subarray(y * 120, y * 120 + 120))).toEqual(Array.from(whole.subarray(((y + 7) * plan.x.size + 10) * 3, ((y + 7) * plan.x.size + 50) * 3)));
  });
});

async function cpuPipeline(spec: PipelineSpec, input: Uint8Array) {
  const p = await Pipeline.create(spec, { workers: 0 });
  try {
    return (await hostTensor(await p.process([input])))!;
  } finally {
    await p.close();
  }
}

describe('resize taps vs the CPU pipeline', () => {
  it('JPEG shrink-on-load (4x and more) is stood in for by a box average of the same factor', async () => {
    const [w, h, size] = [1700, 1300, 150];
    const jpg = await sharp(photo(w, h, 3, 20), { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
    const r = resize({ size });
    const f = jpegShrinkOnLoad(r, w, h);
    expect(f).toBe(4);
    const full = await sharp(jpg).raw().toBuffer();
    const plan = resizePlan(r, w, h, false, f);
    const cpu = await cpuPipeline({ resize: { size }, layout: 'HWC', dtype: 'uint8' }, jpg);
    expect(cpu.dims).toEqual([plan.y.size, plan.x.size, 3]);
    const d = stats(resampleTaps(full, 3, plan.x, plan.y), cpu.data as Uint8Array);
    expect(d.mean, JSON.stringify(d)).toBeLessThanOrEqual(0.5);
    expect(d.p999, JSON.stringify(d)).toBeLessThanOrEqual(2);
  });

  it('RGBA: resized premultiplied by alpha, as sharp does', async () => {
    const [w, h] = [150, 120];
    const src = new Uint8Array(w * h * 4);
    const rgb = photo(w, h, 21);
    for (let i = 0; i < w * h; i++) {
      src.set(rgb.subarray(i * 3, i * 3 + 3), i * 4);
      src[i * 4 + 3] = i % w < 75 ? 255 : (i * 7) % 256; // opaque on the left, any alpha on the right
    }
    const png = await sharp(src, { raw: { width: w, height: h, channels: 4 } }).png().toBuffer();
    for (const size of [90, 160]) {
      const spec: PipelineSpec = { decode: { channels: 4 }, resize: { size }, layout: 'HWC', dtype: 'uint8' };
      const plan = resizePlan(resize({ size }), w, h);
      const model = resampleTaps(src, 4, plan.x, plan.y, { premultiplied: plan.premultiply });
      const cpu = (await cpuPipeline(spec, png)).data as Uint8Array;
      expect(stats(model, cpu).mean).toBeLessThanOrEqual(0.75);
      // where alpha is high, colour matches closely; where it is low, the division magnifies rounding (by design)
      let worst = 0;
      for (let i = 0; i < model.length; i += 4) if (cpu[i + 3] >= 128) for (let c = 0; c < 4; c++) worst = Math.max(worst, Math.abs(model[i + c] - cpu[i + c]));
      expect(worst, `size ${size}`).toBeLessThanOrEqual(3);
    }
  });

  it('EXIF orientation: resized in the stored frame, then oriented (as the GPU kernel maps it)', async () => {
    const [w, h] = [41, 29];
    const stored = photo(w, h, 11);
    const full = await sharp(stored, { raw: { width: w, height: h, channels: 3 } }).png().toBuffer();
    for (const [o, size] of [[6, 47], [7, 47], [2, 47], [5, 20]]) {
      const file = await sharp(full).withMetadata({ orientation: o }).png().toBuffer();
      const t = o >= 5;
      const plan = resizePlan(resize({ size }), w, h, t);
      const rs = resampleTaps(stored, 3, plan.x, plan.y);
      const cpu = await cpuPipeline({ resize: { size }, layout: 'HWC', dtype: 'uint8' }, file);
      // orientation o as sharp applies it after resizing: output (x, y) reads the resized stored image at (sx, sy)
      const [rw, rh] = t ? [plan.y.size, plan.x.size] : [plan.x.size, plan.y.size];
      expect(cpu.dims).toEqual([rh, rw, 3]);
      const mx = [2, 3, 6, 7].includes(o), my = [3, 4, 7, 8].includes(o); // gpu.ts EXIF_ORIENT
      const ref = new Uint8Array(rw * rh * 3);
      for (let y = 0; y < rh; y++) for (let x = 0; x < rw; x++) {
        const xx = mx ? rw - 1 - x : x, yy = my ? rh - 1 - y : y;
        const [sx, sy] = t ? [yy, xx] : [xx, yy];
        for (let c = 0; c < 3; c++) ref[(y * rw + x) * 3 + c] = rs[(sy * plan.x.size + sx) * 3 + c];
      }
      const d = stats(ref, cpu.data as Uint8Array);
      expect(d.max, `orientation ${o}: ${JSON.stringify(d)}`).toBeLessThanOrEqual(2);
    }
  });
});
