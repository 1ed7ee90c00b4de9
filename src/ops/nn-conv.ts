// Convolution kernels over float arrays (Float32Array on the float32 hot path, Float64Array for every other type):
// Conv lowers to im2col + the blocked GEMM per group (1x1 stride-1 convs use the input directly, depthwise convs a
// direct gather loop), ConvTranspose to GEMM + col2im, DeformConv to bilinear-sampled columns + GEMM.
import { gemm, rowMajor, type FloatArray } from './nn-gemm.js';
import { tapOffsets, unravel, type Window } from './nn-window.js';
import { prod } from './util.js';

/** Largest im2col buffer (elements) built at once; bigger convolutions are processed in output-column chunks. */
const MAX_COL = 1 << 24;

export function allocLike(like: FloatArray, n: number): FloatArray {
  if (n > 2 ** 31 - 1) throw new Error(`refusing to allocate a buffer of ${n} elements`);
  return like instanceof Float32Array ? new Float32Array(n) : new Float64Array(n);
}

function fillBias(y: FloatArray, bias: FloatArray | undefined, N: number, M: number, G: number): void {
  if (!bias) return;
  for (let n = 0; n < N; n++) for (let m = 0; m < M; m++) y.fill(bias[m], (n * M + m) * G, (n * M + m + 1) * G);
}

/** Check the channel bookkeeping of Conv-like ops; returns channels per group. */
export function checkGroups(C: number, wDims: readonly number[], group: number, M: number, bias?: { length: number }): number {
  if (!Number.isInteger(group) || group < 1) throw new Error(`group must be a positive integer, found ${group}`);
  if (C % group !== 0) throw new Error(`input channels ${C} are not divisible by group ${group}`);
  if (M % group !== 0) throw new Error(`output channels ${M} are not divisible by group ${group}`);
  if (bias && bias.length !== M) throw new Error(`bias should have ${M} elements (one per output channel), found ${bias.length}`);
  void wDims;
  return C / group;
}

/**
 * Conv forward: x [N, C, ...in], w [M, C/group, ...kernel], optional bias [M]; writes y [N, M, ...win.outDims]
 * (which must be zero-filled).
 */
export function convForward(x: FloatArray, xDims: readonly number[], w: FloatArray, wDims: readonly number[],
  bias: FloatArray | undefined, win: Window, group: number, y: FloatArray, maxCol = MAX_COL): void {
  const [N, C] = xDims;
  const M = wDims[0];
  const Cg = checkGroups(C, wDims, group, M, bias);
  if (wDims[1] !== Cg) throw new Error(`W should have ${Cg} input channels per group (X has ${C} channels, group ${group}), found ${wDims[1]}`);
  const inDims = xDims.slice(2), outDims = win.outDims;
  const I = prod(inDims), G = prod(outDims), Kp = prod(win.kernel), Mg = M / group;
  fillBias(y, bias, N, M, G);
  if (Cg === 1) return depthwise(x, N, C, inDims, w, M, Mg, win, y);
  const pointwise = Kp === 1 && win.strides.every((s) => s === 1) && win.padsBegin.every((p) => p === 0) && G === I;
  const K = Cg * Kp;
  const chunk = pointwise ? G : Math.max(1, Math.min(G, Math.floor(maxCol / K)));
  const col = pointwise ? undefined : allocLike(x, K * chunk);
  const offs = new Int32Array(chunk);
  const tap = new Array<number>(win.kernel.length);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < group; g++) {
      const xOff = (n * C + g * Cg) * I, A = rowMajor(w, g * Mg * K, K), yOff = (n * M + g * Mg) * G;
      if (!col) {
        gemm(Mg, G, K, A, rowMajor(x, xOff, I), y, yOff, G);
        continue;
      }
      for (let g0 = 0; g0 < G; g0 += chunk) {
        const g1 = Math.min(G, g0 + chunk), width = g1 - g0;
        for (let kk = 0; kk < Kp; kk++) {
          tapOffsets(outDims, inDims, win.strides, win.dilations, win.padsBegin, unravel(kk, win.kernel, tap), g0, g1, offs);
          for (let c = 0; c < Cg; c++) {
            const xo = xOff + c * I;
            let o = (c * Kp + kk) * width;
            for (let t = 0; t < width; t++, o++) {
              const off = offs[t];
              col[o] = off >= 0 ? x[xo + off] : 0;
            }
          }
        }
        gemm(Mg, width, K, A, rowMajor(col, 0, width), y, yOff + g0, G);
      }
    }
  }
}

/** One input channel per group: accumulate every tap directly, sharing each tap's gather table across channels. */
function depthwise(x: FloatArray, N: number, C: number, inDims: number[], w: FloatArray, M: number, Mg: number, win: Window, y: FloatArray): void {
  const I = prod(inDims), G = prod(win.outDims), Kp = prod(win.kernel);
  const offs = new Int32Array(G);
  const tap = new Array<number>(win.kernel.length);
  for (let kk = 0; kk < Kp; kk++) {
    tapOffsets(win.outDims, inDims, win.strides, win.dilations, win.padsBegin, unravel(kk, win.kernel, tap), 0, G, offs);
    for (let n = 0; n < N; n++) {
      for (let m = 0; m < M; m++) {
        const wv = w[m * Kp + kk];
        if (wv === 0) continue;
        const xo = (n * C + Math.floor(m / Mg)) * I, yo = (n * M + m) * G;
        for (let t = 0; t < G; t++) {
          const off = offs[t];
          if (off >= 0) y[yo + t] += wv * x[xo + off];
        }
      }
    }
  }
}

/**
 * Scatter-add columns [channels * Kp, grid] into y [channels, ...target] (col2im): column (c, tap, g) lands at
 * target coordinate g * stride - padBegin + tap * dilation.
 */
export function col2imAdd(col: FloatArray, colOff: number, channels: number, kernel: readonly number[], grid: readonly number[],
  target: readonly number[], strides: readonly number[], dilations: readonly number[], padsBegin: readonly number[],
  y: FloatArray, yOff: number, g0 = 0, g1 = prod(grid)): void {
  const Kp = prod(kernel), L = g1 - g0, T = prod(target);
  const offs = new Int32Array(L);
  const tap = new Array<number>(kernel.length);
  for (let kk = 0; kk < Kp; kk++) {
    tapOffsets(grid, target, strides, dilations, padsBegin, unravel(kk, kernel, tap), g0, g1, offs);
    for (let c = 0; c < channels; c++) {
      const co = colOff + (c * Kp + kk) * L, yo = yOff + c * T;
      for (let t = 0; t < L; t++) {
        const off = offs[t];
        if (off >= 0) y[yo + off] += col[co + t];
      }
    }
  }
}

/**
 * ConvTranspose forward: x [N, C, ...in], w [C, M/group, ...kernel]; writes y [N, M, ...win.outDims] (zero-filled).
 * `win.outDims` is the output size; `win.padsBegin` the cropping at the start of each axis.
 */
export function convTransposeForward(x: FloatArray, xDims: readonly number[], w: FloatArray, wDims: readonly number[],
  bias: FloatArray | undefined, win: Window, group: number, y: FloatArray, maxCol = MAX_COL): void {
  const [N, C] = xDims;
  if (wDims[0] !== C) throw new Error(`W's first dimension should equal the input channels ${C}, found ${wDims[0]}`);
  const Mg = wDims[1], M = Mg * group;
  const Cg = checkGroups(C, wDims, group, M, bias);
  const inDims = xDims.slice(2), I = prod(inDims), O = prod(win.outDims), Kp = prod(win.kernel);
  fillBias(y, bias, N, M, O);
  const rows = Mg * Kp;
  const chunk = Math.max(1, Math.min(I, Math.floor(maxCol / rows)));
  const col = allocLike(x, rows * chunk);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < group; g++) {
      const A = { data: w, off: g * Cg * rows, rs: 1, cs: rows }; // W_g^T [Mg*Kp, Cg]
      for (let g0 = 0; g0 < I; g0 += chunk) {
        const g1 = Math.min(I, g0 + chunk), width = g1 - g0;
        col.fill(0);
        gemm(rows, width, Cg, A, rowMajor(x, (n * C + g * Cg) * I + g0, I), col, 0, width);
        col2imAdd(col, 0, Mg, win.kernel, inDims, win.outDims, win.strides, win.dilations, win.padsBegin, y, (n * M + g * Mg) * O, g0, g1);
      }
    }
  }
}

/**
 * DeformConv (2-D): x [N, C, H, W], w [M, C/group, kH, kW], offset [N, offGroups*2*kH*kW, oH, oW], optional mask
 * [N, offGroups*kH*kW, oH, oW]; each tap samples x bilinearly at its offset position (zero outside the image).
 */
export function deformConvForward(x: FloatArray, xDims: readonly number[], w: FloatArray, wDims: readonly number[],
  offset: FloatArray, offDims: readonly number[], mask: FloatArray | undefined, bias: FloatArray | undefined, win: Window,
  group: number, offGroups: number, y: FloatArray): void {
  const [N, C, H, W] = xDims;
  const M = wDims[0];
  const Cg = checkGroups(C, wDims, group, M, bias);
  if (wDims[1] !== Cg) throw new Error(`W should have ${Cg} input channels per group, found ${wDims[1]}`);
  if (!Number.isInteger(offGroups) || offGroups < 1 || C % offGroups !== 0) {
    throw new Error(`offset_group must divide the input channels ${C}, found ${offGroups}`);
  }
  const [kH, kW] = win.kernel, [oH, oW] = win.outDims, Kp = kH * kW, G = oH * oW, Mg = M / group, K = Cg * Kp;
  const expectOff = [N, offGroups * 2 * Kp, oH, oW];
  if (offDims.join() !== expectOff.join()) throw new Error(`offset should have shape [${expectOff}], found [${offDims}]`);
  const cPerOff = C / offGroups;
  fillBias(y, bias, N, M, G);
  const col = allocLike(x, K * G);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < group; g++) {
      for (let c = 0; c < Cg; c++) {
        const ch = g * Cg + c, og = Math.floor(ch / cPerOff), xo = (n * C + ch) * H * W;
        for (let kk = 0; kk < Kp; kk++) {
          const ki = Math.floor(kk / kW), kj = kk % kW;
          const offH = ((n * offGroups + og) * 2 * Kp + 2 * kk) * G, offW = offH + G;
          const mo = mask ? ((n * offGroups + og) * Kp + kk) * G : -1;
          const co = (c * Kp + kk) * G;
          for (let oy = 0; oy < oH; oy++) {
            for (let ox = 0; ox < oW; ox++) {
              const t = oy * oW + ox;
              const py = oy * win.strides[0] - win.padsBegin[0] + ki * win.dilations[0] + offset[offH + t];
              const px = ox * win.strides[1] - win.padsBegin[1] + kj * win.dilations[1] + offset[offW + t];
              let v = bilinear(x, xo, H, W, py, px);
              if (mask) v *= mask[mo + t];
              col[co + t] = v;
            }
          }
        }
      }
      gemm(Mg, G, K, rowMajor(w, g * Mg * K, K), rowMajor(col, 0, G), y, (n * M + g * Mg) * G, G);
    }
  }
}

function bilinear(x: FloatArray, off: number, H: number, W: number, py: number, px: number): number {
  if (!(py > -1 && py < H && px > -1 && px < W)) return 0;
  const y0 = Math.floor(py), x0 = Math.floor(px), dy = py - y0, dx = px - x0;
  const at = (yy: number, xx: number) => (yy >= 0 && yy < H && xx >= 0 && xx < W ? x[off + yy * W + xx] : 0);
  return (1 - dy) * ((1 - dx) * at(y0, x0) + dx * at(y0, x0 + 1)) + dy * ((1 - dx) * at(y0 + 1, x0) + dx * at(y0 + 1, x0 + 1));
}
