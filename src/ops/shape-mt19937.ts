// MT19937 with numpy's legacy seeding and 53-bit doubles. Dropout's `seed` attribute means "the stream numpy's
// RandomState(seed) draws", which is what the ONNX reference outputs were generated with; a seeded Dropout is
// therefore reproducible bit for bit against them. Unseeded Dropout uses the executor's ctx.random().

const N = 624, M = 397;

export class MT19937 {
  private mt = new Uint32Array(N);
  private i = N;

  constructor(seed: number) {
    const mt = this.mt;
    mt[0] = seed >>> 0;
    for (let k = 1; k < N; k++) {
      const x = mt[k - 1] ^ (mt[k - 1] >>> 30);
      // 1812433253 * x + k modulo 2^32, split to stay exact in float64
      mt[k] = ((((x & 0xffff0000) >>> 16) * 1812433253) << 16) + (x & 0xffff) * 1812433253 + k;
    }
  }

  private twist(): void {
    const mt = this.mt;
    for (let k = 0; k < N; k++) {
      const y = (mt[k] & 0x80000000) | (mt[(k + 1) % N] & 0x7fffffff);
      mt[k] = mt[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
    }
    this.i = 0;
  }

  uint32(): number {
    if (this.i >= N) this.twist();
    let y = this.mt[this.i++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** A double in [0, 1) from two draws (27 + 26 bits), as numpy's random_sample. */
  random(): number {
    const a = this.uint32() >>> 5, b = this.uint32() >>> 6;
    return (a * 67108864 + b) / 9007199254740992;
  }
}
