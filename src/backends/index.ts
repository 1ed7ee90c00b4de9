// Backend registry, in priority order. A backend that cannot run here says why; InferenceSession reports every
// requested backend's reason when none can be used.
import type { Backend } from './backend.js';
import { cpuBackend } from './cpu/index.js';

const cudaPlaceholder: Backend = {
  name: 'cuda',
  availability: () => ({ ok: false, reason: 'the CUDA backend is not part of this Kiln build yet (tracked as the CUDA backend issue); use the cpu provider' }),
  createRunner: () => Promise.reject(new Error('cuda backend unavailable')),
};

export const BACKENDS: Backend[] = [cudaPlaceholder, cpuBackend];

export function findBackend(name: string): Backend | undefined {
  return BACKENDS.find((b) => b.name === name);
}
