// The blocked matrix-multiply kernel behind MatMul, Gemm and the im2col convolutions. Operands are packed into
// float64 panels (4 rows of A, 4 columns of B, one k-block at a time) so the inner loop is monomorphic and keeps a
// 4x4 tile of accumulators in registers; float32 inputs therefore accumulate in float64 within each k-block.

export type FloatArray = Float32Array | Float64Array;

/** A strided matrix view: element (r, c) is data[off + r * rs + c * cs]. */
export interface MatView {
  data: FloatArray;
  off: number;
  rs: number;
  cs: number;
}

export const rowMajor = (data: FloatArray, off: number, cols: number): MatView => ({ data, off, rs: cols, cs: 1 });
export const colMajor = (data: FloatArray, off: number, rows: number): MatView => ({ data, off, rs: 1, cs: rows });

const KB = 256; // k-block: one packed A panel (4 x KB doubles) stays in L1
const NB = 128; // n-block: the packed B block (KB x NB doubles) stays in L2

/**
 * C[M x N] += alpha * A[M x K] . B[K x N], with C row-major at `cOff` with row stride `ldc`.
 * A and B may be any strided views (so transposed operands need no copy).
 */
export function gemm(M: number, N: number, K: number, A: MatView, B: MatView, C: FloatArray, cOff: number, ldc: number, alpha = 1): void {
  if (M === 0 || N === 0 || K === 0) return;
  const mPanels = Math.ceil(M / 4);
  const ap = new Float64Array(mPanels * 4 * KB);
  const bp = new Float64Array(KB * NB);
  for (let k0 = 0; k0 < K; k0 += KB) {
    const kb = Math.min(KB, K - k0);
    packA(A, M, k0, kb, ap);
    for (let j0 = 0; j0 < N; j0 += NB) {
      const nb = Math.min(NB, N - j0);
      const nPanels = Math.ceil(nb / 4);
      packB(B, k0, kb, j0, nb, bp);
      for (let p = 0; p < mPanels; p++) {
        const i = p * 4;
        const rows = Math.min(4, M - i);
        for (let q = 0; q < nPanels; q++) {
          const j = j0 + q * 4;
          kernel4x4(ap, p * 4 * kb, bp, q * 4 * kb, kb, C, cOff + i * ldc + j, ldc, rows, Math.min(4, N - j), alpha);
        }
      }
    }
  }
}

/** Pack rows of A (all M) for k in [k0, k0+kb) as panels of 4 rows interleaved: ap[p*4*kb + k*4 + r]. */
function packA(A: MatView, M: number, k0: number, kb: number, ap: Float64Array): void {
  const { data, off, rs, cs } = A;
  for (let i = 0; i < M; i++) {
    const base = (i >> 2) * 4 * kb + (i & 3);
    let src = off + i * rs + k0 * cs;
    for (let k = 0; k < kb; k++, src += cs) ap[base + k * 4] = data[src];
  }
  // rows past M in the last panel must be zero (the buffer is reused across k-blocks)
  for (let i = M; i < Math.ceil(M / 4) * 4; i++) {
    const base = (i >> 2) * 4 * kb + (i & 3);
    for (let k = 0; k < kb; k++) ap[base + k * 4] = 0;
  }
}

/** Pack B[k0..k0+kb, j0..j0+nb) as panels of 4 columns interleaved: bp[q*4*kb + k*4 + c]. */
function packB(B: MatView, k0: number, kb: number, j0: number, nb: number, bp: Float64Array): void {
  const { data, off, rs, cs } = B;
  const padded = Math.ceil(nb / 4) * 4;
  for (let jj = 0; jj < padded; jj++) {
    const base = (jj >> 2) * 4 * kb + (jj & 3);
    if (jj >= nb) {
      for (let k = 0; k < kb; k++) bp[base + k * 4] = 0;
      continue;
    }
    let src = off + k0 * rs + (j0 + jj) * cs;
    for (let k = 0; k < kb; k++, src += rs) bp[base + k * 4] = data[src];
  }
}

function kernel4x4(ap: Float64Array, ao: number, bp: Float64Array, bo: number, kb: number, C: FloatArray, co: number,
  ldc: number, rows: number, cols: number, alpha: number): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let k = 0; k < kb; k++, ao += 4, bo += 4) {
    const a0 = ap[ao], a1 = ap[ao + 1], a2 = ap[ao + 2], a3 = ap[ao + 3];
    const b0 = bp[bo], b1 = bp[bo + 1], b2 = bp[bo + 2], b3 = bp[bo + 3];
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
  }
  if (rows === 4 && cols === 4) {
    C[co] += alpha * c00; C[co + 1] += alpha * c01; C[co + 2] += alpha * c02; C[co + 3] += alpha * c03;
    co += ldc;
    C[co] += alpha * c10; C[co + 1] += alpha * c11; C[co + 2] += alpha * c12; C[co + 3] += alpha * c13;
    co += ldc;
    C[co] += alpha * c20; C[co + 1] += alpha * c21; C[co + 2] += alpha * c22; C[co + 3] += alpha * c23;
    co += ldc;
    C[co] += alpha * c30; C[co + 1] += alpha * c31; C[co + 2] += alpha * c32; C[co + 3] += alpha * c33;
    return;
  }
  const tile = [c00, c01, c02, c03, c10, c11, c12, c13, c20, c21, c22, c23, c30, c31, c32, c33];
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) C[co + r * ldc + c] += alpha * tile[r * 4 + c];
}
