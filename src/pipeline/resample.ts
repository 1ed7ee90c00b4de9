// Resampling as separable tap tables: for each output row or column, the first source index it reads and one weight
// per source pixel from there. The GPU kernel (codegen/image.ts) applies these tables, built here on the host, and
// `resampleTaps` applies the same tables in TypeScript, so the kernel's arithmetic can be checked where there is no
// GPU. The 'bilinear' tables reproduce what the CPU path asks libvips for (sharp `resize` with kernel 'linear'), as
// measured against libvips 8.18 through sharp 0.35 (test/pipeline/resample.test.ts keeps that honest):
// - downscale (vips_reduceh/v): an integer box shrink by floor(in / out / 2) first (the 'gap' of 2; the last box
//   averages what is left), then a triangle filter of half-width `shrink` on the shrunk grid: centre convention,
//   the input trimmed equally on both sides when in/shrink is not whole, the centre's fraction rounded to 1/64
//   (libvips tabulates its masks), 2·rint(shrink)+1 taps around the nearest pixel, edges extended, normalised;
// - upscale (vips_affine, bilinear): output x reads input x / scale - 0.5, edges extended;
// - an axis that is not resized is left alone, except that when the other axis is enlarged libvips' affine still
//   shifts it by half a pixel (input x - 0.5): reproduced too.
// Its 12-bit fixed-point coefficients are reproduced, and the mean error of its integer box average is subtracted
// before rounding (`bias`); it rounds to 8 bits after each pass (vertical, then horizontal) where these tables compose
// the passes and round once, so the two differ by a level here and there (mean ≈ 0.15, rarely 2).
// A JPEG that libjpeg would decode at 1/2, 1/4 or 1/8 size (sharp's shrink-on-load) gets a box of that factor first.
import type { ResolvedSpec } from './spec.js';

/** The taps of one axis: output i reads source lo[i] .. lo[i]+n-1 with weights w[i*n .. i*n+n-1] (zeros pad). */
export interface AxisTaps {
  /** Source size along the axis. */
  inSize: number;
  /** Output size along the axis. */
  size: number;
  /** Levels to subtract before rounding: the mean error of libvips' integer box average (see boxBias). */
  bias: number;
  /** Taps per output (the widest output's count; narrower ones are padded with zero weights). */
  n: number;
  lo: Int32Array;
  w: Float32Array;
}

type Row = { lo: number; w: number[] };

function pack(inSize: number, rows: Row[], bias = 0): AxisTaps {
  // trim zero weights at both ends so that every source index read is inside the image
  for (const r of rows) {
    while (r.w.length > 1 && r.w[0] === 0) { r.w.shift(); r.lo++; }
    while (r.w.length > 1 && r.w[r.w.length - 1] === 0) r.w.pop();
  }
  const n = Math.max(1, ...rows.map((r) => r.w.length));
  const lo = new Int32Array(rows.length), w = new Float32Array(rows.length * n);
  rows.forEach((r, i) => {
    lo[i] = Math.min(r.lo, Math.max(0, inSize - n));
    const shift = r.lo - lo[i];
    r.w.forEach((v, k) => (w[i * n + shift + k] = v));
  });
  return { inSize, size: rows.length, bias, n, lo, w };
}

/** Weights of one output over source indices (clamped into [0, inSize)), gathered into a contiguous row. */
function gather(inSize: number, idx: number[], wts: number[]): Row {
  const c = idx.map((j) => Math.min(inSize - 1, Math.max(0, j)));
  const first = Math.min(...c), last = Math.max(...c);
  const w = new Array<number>(last - first + 1).fill(0);
  c.forEach((j, k) => (w[j - first] += wts[k]));
  return { lo: first, w };
}

/**
 * How far (in levels, on average) libvips' 8-bit box average falls below the exact mean: it computes
 * (sum + ⌊b/2⌋) · ⌊65536/b⌋ >> 16, which rounds for b = 2, 4, 8 and comes out low when 65536/b is not whole.
 */
export function boxBias(b: number): number {
  if (b <= 1) return 0;
  const m = Math.floor(65536 / b);
  let err = 0;
  for (let r = 0; r < b; r++) {
    const sum = 128 * b + r;
    err += sum / b - Math.floor(((sum + Math.floor(b / 2)) * m) / 65536);
  }
  return err / b;
}

const rint = (x: number) => {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r; // round half to even, as C's rint
};

/** libvips' reduce with the linear kernel, by `shrink` ≥ 1 (vips_reduceh/v with gap 2), as taps over the source. */
function linearReduce(inSize: number, shrink: number): { rows: Row[]; bias: number } {
  const out = Math.floor(inSize / shrink + 0.5);
  let extra = out * shrink - inSize;
  const box = Math.max(1, Math.floor(inSize / out / 2));
  let h = shrink;
  const boxed = Math.ceil(inSize / box);
  if (box > 1) { h /= box; extra /= box; }
  // source taps of shrunk pixel k: the box k*box .. k*box+box-1, cut at the image's end (the last box averages less)
  const expand = (k: number, wk: number, idx: number[], wts: number[]) => {
    const a = k * box, b = Math.min(inSize, a + box);
    for (let j = a; j < b; j++) { idx.push(j); wts.push(wk / (b - a)); }
  };
  const rows: Row[] = [];
  if (h === 1) {
    for (let x = 0; x < out; x++) {
      const idx: number[] = [], wts: number[] = [];
      expand(Math.min(boxed - 1, x), 1, idx, wts);
      rows.push(gather(inSize, idx, wts));
    }
    return { rows, bias: boxBias(box) };
  }
  const half = rint(h);
  const hoffset = (1 + extra) / 2 - 1;
  let X = 0.5 * h - 0.5 - hoffset;
  for (let x = 0; x < out; x++, X += h) {
    const ix = Math.trunc(X);
    const frac = ((Math.trunc(X * 128) & 127) + 1) >> 1; // the mask table's index, in 64ths
    const H = frac / 64 + half - 0.5;
    const t: number[] = [];
    for (let i = 0; i <= 2 * half; i++) t.push(Math.max(0, 1 - Math.abs(i - H) / h));
    const sum = t.reduce((s, v) => s + v, 0);
    const idx: number[] = [], wts: number[] = [];
    t.forEach((v0, i) => {
      const v = Math.trunc((v0 / sum) * 4096) / 4096; // libvips' 12-bit fixed-point coefficients, truncated
      if (v === 0) return;
      const k = Math.min(boxed - 1, Math.max(0, ix - half + i));
      expand(k, v, idx, wts);
    });
    rows.push(gather(inSize, idx, wts));
  }
  return { rows, bias: boxBias(box) };
}

/** Rows over an intermediate grid, each intermediate pixel itself a row over the source: rows over the source. */
function compose(inSize: number, outer: Row[], inner: Row[]): Row[] {
  return outer.map((o) => {
    const idx: number[] = [], wts: number[] = [];
    o.w.forEach((wo, k) => inner[o.lo + k].w.forEach((wi, j) => { idx.push(inner[o.lo + k].lo + j); wts.push(wo * wi); }));
    return gather(inSize, idx, wts);
  });
}

/** libvips' affine with the bilinear interpolator at `scale` (> 1, or 1 for the half-pixel shift), `out` outputs. */
function linearEnlarge(inSize: number, scale: number, out: number): Row[] {
  const rows: Row[] = [];
  for (let x = 0; x < out; x++) {
    const p = x / scale - 0.5;
    const i = Math.floor(p), f = p - i;
    rows.push(gather(inSize, [i, i + 1], [1 - f, f]));
  }
  return rows;
}

/** Pixel-area average (each output the mean of the source span it covers), as the CPU path's own area resize. */
function areaRows(inSize: number, out: number): Row[] {
  const scale = inSize / out;
  const rows: Row[] = [];
  for (let i = 0; i < out; i++) {
    const a = i * scale, b = Math.min(inSize, (i + 1) * scale);
    const first = Math.floor(a), last = Math.min(inSize - 1, Math.ceil(b) - 1);
    const w: number[] = [];
    for (let k = first; k <= last; k++) w.push((Math.min(b, k + 1) - Math.max(a, k)) / (b - a));
    rows.push({ lo: first, w });
  }
  return rows;
}

/** Output size of libvips' affine enlargement of `inSize` by `scale`. */
const enlargedSize = (inSize: number, scale: number) => Math.floor(inSize * scale + 0.5);

/** Sizes and taps of a resize of a width × height image, per axis, in the image's own (unrotated) frame. */
export interface ResizePlan {
  x: AxisTaps;
  y: AxisTaps;
  /** sharp resizes an image with alpha premultiplied (bilinear, when it resizes at all). */
  premultiply: boolean;
}

/**
 * The shrink factors sharp derives for the spec's resize of a width × height image (sharp's ResolveShrink): 'shorter'
 * is fit 'outside' with width = height = size (one factor for both axes), 'exact' is fit 'fill'.
 */
export function resizeShrink(r: NonNullable<ResolvedSpec['resize']>, width: number, height: number): [number, number] {
  if (r.mode === 'exact') return [width / r.width, height / r.height];
  const s = Math.min(width / r.size, height / r.size);
  return [s, s];
}

/**
 * The factor by which sharp has libjpeg decode a JPEG smaller before this resize (its shrink-on-load, with
 * fastShrinkOnLoad off as the CPU path asks: 2, 4 or 8 once the shrink reaches twice that), else 1.
 */
export function jpegShrinkOnLoad(r: NonNullable<ResolvedSpec['resize']>, width: number, height: number, transposed = false): number {
  if (r.interpolation !== 'bilinear') return 1;
  const rr = transposed && r.mode === 'exact' ? { ...r, width: r.height, height: r.width } : r;
  const s = Math.min(...resizeShrink(rr, width, height));
  return s >= 16 ? 8 : s >= 8 ? 4 : s >= 4 ? 2 : 1;
}

const unpack = (t: AxisTaps): Row[] => Array.from({ length: t.size }, (_, i) => ({ lo: t.lo[i], w: Array.from(t.w.subarray(i * t.n, (i + 1) * t.n)) }));

/** Identity taps (no resize along this axis). */
export function identityTaps(size: number): AxisTaps {
  return pack(size, Array.from({ length: size }, (_, x) => ({ lo: x, w: [1] })));
}

/**
 * Taps of the spec's resize for a width × height image in its stored frame (before EXIF orientation, which the CPU
 * path applies after resizing; `transposed` says the orientation swaps the axes, so the target's are swapped too).
 */
export function resizePlan(r: NonNullable<ResolvedSpec['resize']>, width: number, height: number, transposed = false, prescale = 1): ResizePlan {
  if (prescale > 1) {
    // libjpeg's reduced-size decode, stood in for by a box average of the same factor (ceil sizes, as libjpeg's)
    const inner = resizePlan(r, Math.ceil(width / prescale), Math.ceil(height / prescale), transposed);
    const boxes = (inSize: number, n: number): Row[] => Array.from({ length: n }, (_, k) => {
      const a = k * prescale, b = Math.min(inSize, a + prescale);
      return { lo: a, w: new Array<number>(b - a).fill(1 / (b - a)) };
    });
    const over = (t: AxisTaps, inSize: number) => pack(inSize, compose(inSize, unpack(t), boxes(inSize, t.inSize)), t.bias);
    return { x: over(inner.x, width), y: over(inner.y, height), premultiply: inner.premultiply };
  }
  const rr = transposed && r.mode === 'exact' ? { ...r, width: r.height, height: r.width } : r;
  const [hs, vs] = resizeShrink(rr, width, height);
  if (r.interpolation === 'area') {
    const [w, h] = rr.mode === 'exact' ? [rr.width, rr.height] : [Math.max(1, Math.floor(width / hs + 0.5)), Math.max(1, Math.floor(height / vs + 0.5))];
    return { x: pack(width, areaRows(width, w)), y: pack(height, areaRows(height, h)), premultiply: false };
  }
  if (hs === 1 && vs === 1) return { x: identityTaps(width), y: identityTaps(height), premultiply: false };
  // vips_resize: scale factors 1/shrink, each floored at one output pixel; reduce the axes that shrink, then one
  // affine pass for those that grow (which moves an unscaled axis by half a pixel)
  const hscale = Math.max(1 / hs, 1 / width), vscale = Math.max(1 / vs, 1 / height);
  const grow = hscale > 1 || vscale > 1;
  const axis = (inSize: number, scale: number): AxisTaps => {
    if (scale > 1) return pack(inSize, linearEnlarge(inSize, scale, enlargedSize(inSize, scale)));
    if (scale === 1) return grow ? pack(inSize, linearEnlarge(inSize, 1, inSize)) : identityTaps(inSize);
    const { rows, bias } = linearReduce(inSize, 1 / scale);
    return pack(inSize, grow ? compose(inSize, linearEnlarge(rows.length, 1, rows.length), rows) : rows, bias);
  };
  return { x: axis(width, hscale), y: axis(height, vscale), premultiply: true };
}

export interface ResampleWindow {
  /** The output window [x0, x0+w) × [y0, y0+h) (default: all of it). */
  x0?: number;
  y0?: number;
  w?: number;
  h?: number;
  /**
   * RGBA resized as sharp does it: colour premultiplied by alpha (truncated to 8 bits), resized, then divided by the
   * resized alpha (truncated; 0 where alpha is 0). For 4 channels, where the image is resized at all (ResizePlan's
   * `premultiply`). Where alpha is small the division magnifies the passes' rounding: colour there may differ a lot.
   */
  premultiplied?: boolean;
}

/**
 * Apply taps to an 8-bit interleaved image: value = round(Σ_y wy Σ_x wx p), clamped to 0–255. The same arithmetic as
 * the GPU kernel, in float32 (the kernel's precision).
 */
export function resampleTaps(src: Uint8Array, channels: number, tx: AxisTaps, ty: AxisTaps, win: ResampleWindow = {}): Uint8Array {
  const { x0 = 0, y0 = 0, w = tx.size, h = ty.size } = win;
  const pre = win.premultiplied === true && channels === 4;
  const out = new Uint8Array(w * h * channels);
  const rowStride = tx.inSize * channels;
  const acc = new Float32Array(channels);
  const round = Math.fround(0.5 - tx.bias - ty.bias);
  for (let oy = 0; oy < h; oy++) {
    const iy = y0 + oy;
    for (let ox = 0; ox < w; ox++) {
      const ix = x0 + ox;
      acc.fill(0);
      for (let a = 0; a < ty.n; a++) {
        const wy = ty.w[iy * ty.n + a];
        if (wy === 0) continue;
        const row = (ty.lo[iy] + a) * rowStride;
        for (let b = 0; b < tx.n; b++) {
          const wgt = Math.fround(wy * tx.w[ix * tx.n + b]);
          if (wgt === 0) continue;
          const p = row + (tx.lo[ix] + b) * channels;
          for (let c = 0; c < channels; c++) {
            const v = pre && c < 3 ? Math.trunc(Math.fround(Math.fround(src[p + c] * src[p + 3]) / 255)) : src[p + c];
            acc[c] = Math.fround(acc[c] + Math.fround(wgt * v));
          }
        }
      }
      const o = (oy * w + ox) * channels;
      for (let c = 0; c < channels; c++) out[o + c] = Math.min(255, Math.max(0, Math.floor(acc[c] + round)));
      if (pre) {
        const alpha = out[o + 3];
        for (let c = 0; c < 3; c++) out[o + c] = alpha === 0 ? 0 : Math.min(255, Math.trunc(Math.fround(Math.fround(out[o + c] * 255) / alpha)));
      }
    }
  }
  return out;
}
