// The CPU executor's own pixel work: crop, flip, channel expansion, normalize, layout and dtype fused into one pass
// over the decoded 8-bit image. A pixel holds one of 256 values per channel, so normalize + dtype conversion is a
// table lookup built once per spec; the pass is then one gather per output element. Also the 'area' resize.
import { floatToFloat16 } from '../ir/dtype.js';
import { InputError } from '../ir/errors.js';
import { seededRandom } from '../ir/builder.js';
import type { ResolvedSpec } from './spec.js';
import { resizeShrink } from './resample.js';

/** A decoded image: 8-bit, interleaved (HWC). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

export type ItemArray = Float32Array | Uint16Array | Uint8Array;

/** Per-channel lookup tables (256 entries each) mapping a pixel value to the output element; none for uint8. */
export function lookupTable(s: ResolvedSpec): Float32Array | Uint16Array | undefined {
  if (s.dtype === 'uint8') return undefined;
  const c = s.decode.channels;
  const f = new Float32Array(c * 256);
  for (let k = 0; k < c; k++) {
    for (let v = 0; v < 256; v++) f[k * 256 + v] = s.normalize ? v * s.normalize.scale[k] + s.normalize.shift[k] : v;
  }
  if (s.dtype === 'float32') return f;
  return Uint16Array.from(f, floatToFloat16);
}

/** An item's own random stream: depends on the seed and its index only, not on which worker runs it or when. */
export function itemRandom(seed: number, index: number): () => number {
  return seededRandom((Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35)) | 0);
}

/** Crop window and flips of one item. */
export function placement(s: ResolvedSpec, width: number, height: number, index: number, name: string) {
  const rnd = itemRandom(s.seed, index);
  let x0 = 0, y0 = 0, w = width, h = height;
  if (s.crop) {
    ({ width: w, height: h } = s.crop);
    if (w > width || h > height) {
      throw new InputError(`${name}: the image is ${width}×${height} after resize, smaller than the ${w}×${h} crop.`,
        { hint: 'Resize first (resize.mode \'shorter\' with size ≥ the crop) or crop smaller.' });
    }
    if (s.crop.mode === 'center') {
      x0 = Math.round((width - w) / 2);
      y0 = Math.round((height - h) / 2);
    } else {
      x0 = Math.floor(rnd() * (width - w + 1));
      y0 = Math.floor(rnd() * (height - h + 1));
    }
  }
  const flipH = s.flip.horizontal === 'random' ? rnd() < 0.5 : s.flip.horizontal;
  const flipV = s.flip.vertical === 'random' ? rnd() < 0.5 : s.flip.vertical;
  return { x0, y0, w, h, flipH, flipV };
}

function allocItem(s: ResolvedSpec, n: number): ItemArray {
  return s.dtype === 'float32' ? new Float32Array(n) : s.dtype === 'float16' ? new Uint16Array(n) : new Uint8Array(n);
}

/** Crop, flip, expand channels, normalize, lay out and convert one image; returns the item and its dims. */
export function packImage(img: RawImage, s: ResolvedSpec, lut: Float32Array | Uint16Array | undefined, index: number, name: string): { data: ItemArray; dims: number[] } {
  const C = s.decode.channels;
  const cin = img.channels;
  if (cin !== C && cin !== 1) throw new InputError(`${name}: decoded to ${cin} channels, expected ${C}.`);
  const { x0, y0, w, h, flipH, flipV } = placement(s, img.width, img.height, index, name);
  const out = allocItem(s, C * w * h);
  const src = img.data;
  const rowStride = img.width * cin;
  const table = lut ?? identity;
  const chw = s.layout === 'NCHW' || s.layout === 'CHW';
  let o = 0;
  if (chw) {
    for (let c = 0; c < C; c++) {
      const lb = c * 256;
      const sc = cin === 1 ? 0 : c;
      for (let y = 0; y < h; y++) {
        const sy = flipV ? y0 + h - 1 - y : y0 + y;
        const row = sy * rowStride + sc;
        if (flipH) for (let x = 0; x < w; x++) out[o++] = table[lb + src[row + (x0 + w - 1 - x) * cin]];
        else for (let x = 0, p = row + x0 * cin; x < w; x++, p += cin) out[o++] = table[lb + src[p]];
      }
    }
  } else {
    for (let y = 0; y < h; y++) {
      const sy = flipV ? y0 + h - 1 - y : y0 + y;
      const row = sy * rowStride;
      for (let x = 0; x < w; x++) {
        const p = row + (flipH ? x0 + w - 1 - x : x0 + x) * cin;
        for (let c = 0; c < C; c++) out[o++] = table[c * 256 + src[cin === 1 ? p : p + c]];
      }
    }
  }
  return { data: out, dims: chw ? [C, h, w] : [h, w, C] };
}

const identity = (() => {
  const t = new Uint8Array(4 * 256);
  for (let i = 0; i < t.length; i++) t[i] = i & 255;
  return t;
})();

/** Target size of a resize for an image of width × height: as sharp computes it (the shorter side to `size`). */
export function resizeTarget(r: NonNullable<ResolvedSpec['resize']>, width: number, height: number): [number, number] {
  if (r.mode === 'exact') return [r.width, r.height];
  const [hs, vs] = resizeShrink(r, width, height);
  return [Math.max(1, Math.floor(width / hs + 0.5)), Math.max(1, Math.floor(height / vs + 0.5))];
}

/** For each output index along one axis: the source indices it covers and their weights (pixel-area overlap). */
function areaWeights(inSize: number, outSize: number): { start: Int32Array; count: Int32Array; weight: Float32Array } {
  const scale = inSize / outSize;
  const start = new Int32Array(outSize), count = new Int32Array(outSize);
  const ws: number[] = [];
  for (let i = 0; i < outSize; i++) {
    const a = i * scale, b = Math.min(inSize, (i + 1) * scale);
    const first = Math.floor(a), last = Math.min(inSize - 1, Math.ceil(b) - 1);
    start[i] = first;
    count[i] = last - first + 1;
    for (let k = first; k <= last; k++) ws.push((Math.min(b, k + 1) - Math.max(a, k)) / (b - a));
  }
  return { start, count, weight: Float32Array.from(ws) };
}

/** Area resize (each output pixel the average of the source area it covers), rounded to 8 bits. */
export function resizeArea(img: RawImage, outW: number, outH: number): RawImage {
  const { width: W, height: H, channels: C, data } = img;
  const hx = areaWeights(W, outW), hy = areaWeights(H, outH);
  const tmp = new Float32Array(H * outW * C);
  for (let y = 0; y < H; y++) {
    for (let x = 0, k = 0; x < outW; x++) {
      const base = y * W * C, o = (y * outW + x) * C;
      for (let j = 0; j < hx.count[x]; j++, k++) {
        const wgt = hx.weight[k], p = base + (hx.start[x] + j) * C;
        for (let c = 0; c < C; c++) tmp[o + c] += wgt * data[p + c];
      }
    }
  }
  const out = new Uint8Array(outH * outW * C);
  const row = outW * C;
  const acc = new Float32Array(row);
  for (let y = 0, k = 0; y < outH; y++) {
    acc.fill(0);
    for (let j = 0; j < hy.count[y]; j++, k++) {
      const wgt = hy.weight[k], base = (hy.start[y] + j) * row;
      for (let i = 0; i < row; i++) acc[i] += wgt * tmp[base + i];
    }
    for (let i = 0; i < row; i++) out[y * row + i] = Math.min(255, Math.max(0, Math.round(acc[i])));
  }
  return { data: out, width: outW, height: outH, channels: C };
}
