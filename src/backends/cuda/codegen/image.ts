// The image pipeline's GPU step: one kernel per pipeline spec that takes a batch of decoded 8-bit images (any sizes,
// interleaved, anywhere in one device buffer) and writes the finished batch: EXIF orientation, resize (antialiased
// triangle 'bilinear' or pixel-area 'area'), crop, flip, channel expansion, normalize, layout and dtype in one pass.
// What is per image (source size and place, orientation, resized size, crop origin, flips) comes from a metadata
// array; what is per spec (output size, channels, layout, dtype, normalize constants, filter) is baked in.
//
// Parameters: src (uint8 base), meta (long long[IMAGE_META * n]), out (the batch), n (images, as a 64-bit value).
// The resized value is rounded to 8 bits before normalize, as the CPU path (libvips and its area resize) does.
import { finish, launch1d, lit, type KernelSource } from './types.js';

/** long longs of metadata per image, in this order. */
export const IMAGE_META = 12;
export const META = { offset: 0, width: 1, height: 2, pitch: 3, channels: 4, orient: 5, resizedW: 6, resizedH: 7, x0: 8, y0: 9, flips: 10 } as const;
/** Orientation bits (applied to output coordinates): mirror x, mirror y, then swap axes. */
export const ORIENT = { mirrorX: 1, mirrorY: 2, transpose: 4 } as const;

export interface ImageKernelArgs {
  /** Output height, width and channels (1, 3 or 4; a 1-channel source is repeated). */
  height: number;
  width: number;
  channels: number;
  interpolation: 'none' | 'bilinear' | 'area';
  layout: 'NCHW' | 'NHWC';
  dtype: 'float32' | 'float16' | 'uint8';
  /** Per channel: value = pixel * scale + shift (absent: the pixel itself). */
  normalize?: { scale: number[]; shift: number[] };
}

const f32 = (x: number) => {
  const v = Math.fround(x);
  return Number.isInteger(v) ? `${v}.0f` : `${v.toPrecision(9)}f`;
};

/** Taps of one axis for output coordinate r over a source of `in` pixels resized to `out`. */
const TAPS = String.raw`
struct Taps { int lo, hi; float a, b; };
__device__ __forceinline__ Taps taps_bilinear(int r, int in, int out) {
  float scale = (float)in / (float)out, support = scale > 1.0f ? scale : 1.0f, c = ((float)r + 0.5f) * scale;
  Taps t; t.lo = max(0, (int)floorf(c - support)); t.hi = min(in - 1, (int)ceilf(c + support)); t.a = c; t.b = 1.0f / support;
  return t;
}
__device__ __forceinline__ float w_bilinear(const Taps& t, int k) { return fmaxf(0.0f, 1.0f - fabsf(((float)k + 0.5f - t.a) * t.b)); }
__device__ __forceinline__ Taps taps_area(int r, int in, int out) {
  float scale = (float)in / (float)out, a = (float)r * scale, b = fminf((float)in, (float)(r + 1) * scale);
  Taps t; t.lo = (int)floorf(a); t.hi = min(in - 1, (int)ceilf(b) - 1); t.a = a; t.b = b;
  return t;
}
__device__ __forceinline__ float w_area(const Taps& t, int k) { return (fminf(t.b, (float)(k + 1)) - fmaxf(t.a, (float)k)) / (t.b - t.a); }
__device__ __forceinline__ Taps taps_none(int r, int in, int out) { Taps t; t.lo = r; t.hi = r; t.a = 0.0f; t.b = 0.0f; return t; }
__device__ __forceinline__ float w_none(const Taps& t, int k) { return 1.0f; }
`;

/** The fused preprocessing kernel for one spec; launch with `imageLaunch(k, n)` for a batch of n images. */
export function imageKernel(a: ImageKernelArgs): KernelSource {
  const { height: H, width: W, channels: C } = a;
  const out = a.dtype === 'float32' ? 'float' : a.dtype === 'float16' ? 'unsigned short' : 'unsigned char';
  const f = a.interpolation;
  const store = (c: number) => {
    const v = a.normalize ? `(v${c} * ${f32(a.normalize.scale[c])} + ${f32(a.normalize.shift[c])})` : `v${c}`;
    const val = a.dtype === 'float16' ? `f2h(${v})` : a.dtype === 'uint8' ? `(unsigned char)v${c}` : v;
    const idx = a.layout === 'NCHW' ? `((img * ${C} + ${c}) * ${lit(H)} + (long long)oy) * ${lit(W)} + ox` : `(((long long)img * ${lit(H)} + oy) * ${lit(W)} + ox) * ${C} + ${c}`;
    return `out[${idx}] = ${val};`;
  };
  const ch = Array.from({ length: C }, (_, c) => c);
  const body = String.raw`${TAPS}
extern "C" __global__ void __launch_bounds__(256) KNAME(const unsigned char* __restrict__ src, const long long* __restrict__ meta, ${out}* __restrict__ out, long long n) {
  const long long total = n * ${lit(H * W)};
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const long long img = i / ${lit(H * W)};
    const int p = (int)(i - img * ${lit(H * W)}), oy = p / ${W}, ox = p - oy * ${W};
    const long long* m = meta + img * ${IMAGE_META};
    const unsigned char* s = src + m[0];
    const int sw = (int)m[1], sh = (int)m[2], pitch = (int)m[3], cin = (int)m[4], orient = (int)m[5];
    const int rw = (int)m[6], rh = (int)m[7], flips = (int)m[10];
    const int ow = (orient & 4) ? sh : sw, oh = (orient & 4) ? sw : sh;
    const int rx = (int)m[8] + ((flips & 1) ? ${W - 1} - ox : ox), ry = (int)m[9] + ((flips & 2) ? ${H - 1} - oy : oy);
    const Taps tx = taps_${f}(rx, ow, rw), ty = taps_${f}(ry, oh, rh);
    float sx = 0.0f, sy = 0.0f;
    for (int k = tx.lo; k <= tx.hi; k++) sx += w_${f}(tx, k);
    for (int k = ty.lo; k <= ty.hi; k++) sy += w_${f}(ty, k);
    ${ch.map((c) => `float a${c} = 0.0f;`).join(' ')}
    for (int y = ty.lo; y <= ty.hi; y++) {
      const float wy = w_${f}(ty, y);
      if (wy == 0.0f) continue;
      const int yy = (orient & 2) ? oh - 1 - y : y;
      for (int x = tx.lo; x <= tx.hi; x++) {
        const float w = wy * w_${f}(tx, x);
        if (w == 0.0f) continue;
        const int xx = (orient & 1) ? ow - 1 - x : x;
        const unsigned char* q = s + (long long)((orient & 4) ? xx : yy) * pitch + (long long)((orient & 4) ? yy : xx) * cin;
        ${ch.map((c) => `a${c} += w * (float)q[cin == 1 ? 0 : ${c}];`).join(' ')}
      }
    }
    const float inv = 1.0f / (sx * sy);
    ${ch.map((c) => `const float v${c} = rintf(fminf(255.0f, fmaxf(0.0f, a${c} * inv)));`).join('\n    ')}
    ${ch.map(store).join('\n    ')}
  }
}`;
  return finish('kiln_image', body, { ...launch1d(1), sharedBytes: 0, params: [] });
}

/** The launch of `k` for a batch of n images of its output size. */
export function imageLaunch(k: KernelSource, n: number, pixels: number): KernelSource {
  return { ...k, ...launch1d(n * pixels) };
}
