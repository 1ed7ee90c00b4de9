// Complex DFT of arbitrary length: iterative radix-2 FFT for powers of two, Bluestein's chirp-z algorithm (via a
// power-of-two FFT) for every other length, so any length costs O(n log n).

/** A reusable transform of one length; `run` transforms (re, im) in place. */
export interface FftPlan {
  n: number;
  /** In-place forward (e^{-2πi jk/n}) or inverse (e^{+2πi jk/n}, unnormalized) transform. */
  run(re: Float64Array, im: Float64Array, inverse: boolean): void;
}

/** Longest supported transform (Bluestein needs 4 work arrays of up to 4n points). */
export const MAX_FFT = 2 ** 24;

const isPow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;

function radix2(n: number): FftPlan {
  const levels = Math.log2(n);
  const rev = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    let r = 0;
    for (let b = 0; b < levels; b++) r |= ((i >> b) & 1) << (levels - 1 - b);
    rev[i] = r;
  }
  const cos = new Float64Array(n / 2), sin = new Float64Array(n / 2);
  for (let i = 0; i < n / 2; i++) { cos[i] = Math.cos((2 * Math.PI * i) / n); sin[i] = Math.sin((2 * Math.PI * i) / n); }
  return {
    n,
    run(re, im, inverse) {
      for (let i = 0; i < n; i++) {
        const j = rev[i];
        if (j > i) {
          let t = re[i]; re[i] = re[j]; re[j] = t;
          t = im[i]; im[i] = im[j]; im[j] = t;
        }
      }
      const sign = inverse ? 1 : -1;
      for (let size = 2; size <= n; size *= 2) {
        const half = size / 2, step = n / size;
        for (let s = 0; s < n; s += size) {
          for (let k = 0; k < half; k++) {
            const wr = cos[k * step], wi = sign * sin[k * step];
            const a = s + k, b = a + half;
            const tr = re[b] * wr - im[b] * wi, ti = re[b] * wi + im[b] * wr;
            re[b] = re[a] - tr; im[b] = im[a] - ti;
            re[a] += tr; im[a] += ti;
          }
        }
      }
    },
  };
}

function bluestein(n: number): FftPlan {
  let m = 1;
  while (m < 2 * n - 1) m *= 2;
  const inner = radix2(m);
  // chirp w_k = e^{-πi k²/n}; k² is reduced mod 2n to keep the angle exact for large k
  const cr = new Float64Array(n), ci = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const a = (Math.PI * Number((BigInt(k) * BigInt(k)) % BigInt(2 * n))) / n;
    cr[k] = Math.cos(a); ci[k] = -Math.sin(a);
  }
  // FFT of the conjugate chirp laid out circularly over m points
  const br = new Float64Array(m), bi = new Float64Array(m);
  br[0] = cr[0]; bi[0] = -ci[0];
  for (let k = 1; k < n; k++) { br[k] = br[m - k] = cr[k]; bi[k] = bi[m - k] = -ci[k]; }
  inner.run(br, bi, false);
  const ar = new Float64Array(m), ai = new Float64Array(m);
  return {
    n,
    run(re, im, inverse) {
      // the inverse transform is the conjugate of the forward transform of the conjugate
      const s = inverse ? -1 : 1;
      ar.fill(0); ai.fill(0);
      for (let k = 0; k < n; k++) {
        const xr = re[k], xi = s * im[k];
        ar[k] = xr * cr[k] - xi * ci[k]; ai[k] = xr * ci[k] + xi * cr[k];
      }
      inner.run(ar, ai, false);
      for (let k = 0; k < m; k++) {
        const r = ar[k] * br[k] - ai[k] * bi[k];
        ai[k] = ar[k] * bi[k] + ai[k] * br[k]; ar[k] = r;
      }
      inner.run(ar, ai, true);
      for (let k = 0; k < n; k++) {
        const yr = ar[k] / m, yi = ai[k] / m;
        re[k] = yr * cr[k] - yi * ci[k];
        im[k] = s * (yr * ci[k] + yi * cr[k]);
      }
    },
  };
}

export function fftPlan(n: number): FftPlan {
  if (!(Number.isInteger(n) && n >= 1)) throw new Error(`DFT length must be a positive integer, found ${n}`);
  if (n > MAX_FFT) throw new Error(`DFT length ${n} is too large (limit ${MAX_FFT})`);
  if (n === 1) return { n, run: () => {} };
  return isPow2(n) ? radix2(n) : bluestein(n);
}
