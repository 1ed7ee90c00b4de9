// The image pipeline's GPU step: one kernel per pipeline spec that takes a batch of decoded 8-bit images (any sizes,
// interleaved, anywhere in one device buffer) and writes the finished batch: resize, EXIF orientation, crop, flip,
// channel expansion, normalize, layout and dtype in one pass. The resize is a table of separable taps per image,
// built on the host (src/pipeline/resample.ts: the filters the CPU path gets from libvips, or the pixel-area
// average), so this kernel only applies them, and resample.ts' `resampleTaps` is its arithmetic in TypeScript.
// As on the CPU path, the resize happens in the image's stored frame and the orientation after it: the kernel maps
// each output pixel to the resized image's stored frame, then reads that pixel's taps.
// What is per image (source place and size, orientation, resized size, crop origin, flips, taps) comes from a
// metadata array; what is per spec (output size, channels, layout, dtype, normalize constants) is baked in.
//
// Parameters: src (uint8 base), meta (long long[IMAGE_META * n]), taps (32-bit words: per image and axis, the first
// source index of each resized pixel in the window the crop reads, then `n` float weights each), out, n (images).
// The resized value is rounded to 8 bits before normalize, as the CPU path does.
import { finish, launch1d, lit, type KernelSource } from './types.js';

/** long longs of metadata per image, in this order. */
export const IMAGE_META = 20;
export const META = {
  offset: 0, width: 1, height: 2, pitch: 3, channels: 4, orient: 5, resizedW: 6, resizedH: 7, x0: 8, y0: 9, flips: 10,
  /** Word offsets of the x and y tables (first source index per entry), taps per entry, first stored-frame x, y. */
  loX: 11, loY: 12, nx: 13, ny: 14, qx0: 15, qy0: 16,
  /** Word offsets of the x and y weights (n floats per entry); the rounding offset (0.5 - bias) as float bits. */
  wX: 17, wY: 18, round: 19,
} as const;
/** Orientation bits (applied to output coordinates): mirror x, mirror y, then swap axes. */
export const ORIENT = { mirrorX: 1, mirrorY: 2, transpose: 4 } as const;

export interface ImageKernelArgs {
  /** Output height, width and channels (1, 3 or 4; a 1-channel source is repeated). */
  height: number;
  width: number;
  channels: number;
  layout: 'NCHW' | 'NHWC';
  dtype: 'float32' | 'float16' | 'uint8';
  /** Per channel: value = pixel * scale + shift (absent: the pixel itself). */
  normalize?: { scale: number[]; shift: number[] };
}

const f32 = (x: number) => {
  const v = Math.fround(x);
  return Number.isInteger(v) ? `${v}.0f` : `${v.toPrecision(9)}f`;
};

/** The fused preprocessing kernel for one spec; launch with `imageLaunch(k, n)` for a batch of n images. */
export function imageKernel(a: ImageKernelArgs): KernelSource {
  const { height: H, width: W, channels: C } = a;
  const out = a.dtype === 'float32' ? 'float' : a.dtype === 'float16' ? 'unsigned short' : 'unsigned char';
  const store = (c: number) => {
    const v = a.normalize ? `(v${c} * ${f32(a.normalize.scale[c])} + ${f32(a.normalize.shift[c])})` : `v${c}`;
    const val = a.dtype === 'float16' ? `f2h(${v})` : a.dtype === 'uint8' ? `(unsigned char)v${c}` : v;
    const idx = a.layout === 'NCHW' ? `((img * ${C} + ${c}) * ${lit(H)} + (long long)oy) * ${lit(W)} + ox` : `(((long long)img * ${lit(H)} + oy) * ${lit(W)} + ox) * ${C} + ${c}`;
    return `out[${idx}] = ${val};`;
  };
  const ch = Array.from({ length: C }, (_, c) => c);
  // RGBA as sharp resizes it (flag 4 of the flips word, set for images that are resized): colour premultiplied by
  // alpha and truncated to 8 bits, resized, then divided by the resized alpha and truncated (resample.ts has the same)
  const premulRead = String.raw`if (cin == 1) { const float g = (float)q[0]; a0 += w * g; a1 += w * g; a2 += w * g; a3 += w * g; } else {
          const float al = (float)q[3];
          if (pre) { a0 += w * truncf((float)q[0] * al / 255.0f); a1 += w * truncf((float)q[1] * al / 255.0f); a2 += w * truncf((float)q[2] * al / 255.0f); }
          else { a0 += w * (float)q[0]; a1 += w * (float)q[1]; a2 += w * (float)q[2]; }
          a3 += w * al;
        }`;
  const premulWrite = String.raw`if (pre) {
      if (v3 == 0.0f) { v0 = 0.0f; v1 = 0.0f; v2 = 0.0f; }
      else { v0 = fminf(255.0f, truncf(v0 * 255.0f / v3)); v1 = fminf(255.0f, truncf(v1 * 255.0f / v3)); v2 = fminf(255.0f, truncf(v2 * 255.0f / v3)); }
    }`;
  const body = String.raw`
extern "C" __global__ void __launch_bounds__(256) KNAME(const unsigned char* __restrict__ src, const long long* __restrict__ meta, const int* __restrict__ taps, ${out}* __restrict__ out, long long n) {
  const long long total = n * ${lit(H * W)};
  const float* __restrict__ tapw = (const float*)taps;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
    const long long img = i / ${lit(H * W)};
    const int p = (int)(i - img * ${lit(H * W)}), oy = p / ${W}, ox = p - oy * ${W};
    const long long* m = meta + img * ${IMAGE_META};
    const unsigned char* s = src + m[0];
    const int pitch = (int)m[3], cin = (int)m[4], orient = (int)m[5], rw = (int)m[6], rh = (int)m[7], flips = (int)m[10];
    const int nx = (int)m[13], ny = (int)m[14];
    const float rnd = __int_as_float((int)m[19]);${C === 4 ? '\n    const bool pre = (flips & 4) != 0;' : ''}
    // crop and flip in the oriented, resized frame; then back to the resized image's stored frame
    const int rx = (int)m[8] + ((flips & 1) ? ${W - 1} - ox : ox), ry = (int)m[9] + ((flips & 2) ? ${H - 1} - oy : oy);
    const int xx = (orient & 1) ? rw - 1 - rx : rx, yy = (orient & 2) ? rh - 1 - ry : ry;
    const int qx = ((orient & 4) ? yy : xx) - (int)m[15], qy = ((orient & 4) ? xx : yy) - (int)m[16];
    const int lox = taps[m[11] + qx], loy = taps[m[12] + qy];
    const float* wx = tapw + m[17] + (long long)qx * nx;
    const float* wy = tapw + m[18] + (long long)qy * ny;
    ${ch.map((c) => `float a${c} = 0.0f;`).join(' ')}
    for (int a = 0; a < ny; a++) {
      const float vy = wy[a];
      if (vy == 0.0f) continue;
      const unsigned char* row = s + (long long)(loy + a) * pitch + (long long)lox * cin;
      for (int b = 0; b < nx; b++) {
        const float w = vy * wx[b];
        if (w == 0.0f) continue;
        const unsigned char* q = row + b * cin;
        ${C === 4 ? premulRead : ch.map((c) => `a${c} += w * (float)q[cin == 1 ? 0 : ${c}];`).join(' ')}
      }
    }
    ${ch.map((c) => `${C === 4 && c < 3 ? 'float' : 'const float'} v${c} = fminf(255.0f, fmaxf(0.0f, floorf(a${c} + rnd)));`).join('\n    ')}
    ${C === 4 ? premulWrite : ''}
    ${ch.map(store).join('\n    ')}
  }
}`;
  return finish('kiln_image', body, { ...launch1d(1), sharedBytes: 0, params: [] });
}

/** The launch of `k` for a batch of n images of its output size. */
export function imageLaunch(k: KernelSource, n: number, pixels: number): KernelSource {
  return { ...k, ...launch1d(n * pixels) };
}
