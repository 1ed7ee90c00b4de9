import { RUNTIME_H, RUNTIME_C, renderGemm } from '../../src/backends/cpu/kernels/runtime.c.js';
console.log(RUNTIME_H + RUNTIME_C + renderGemm(12, 2) + renderGemm(6, 2));
