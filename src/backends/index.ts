// Backend registry, in priority order. A backend that cannot run here says why; InferenceSession reports every
// requested backend's reason when none can be used.
import type { Backend } from './backend.js';
import { cpuBackend } from './cpu/index.js';

const unavailable = (name: string, reason: string): Backend => ({
  name,
  availability: () => ({ ok: false, reason }),
  signature: () => ({ backend: name, arch: process.arch, platform: process.platform, name, features: {} }),
  tactics: () => [],
  serializeKernels: () => [],
  createRunner: () => Promise.reject(new Error(`${name} backend unavailable: ${reason}`)),
});

// The CUDA backend is not part of this build yet: asking for it says so instead of failing obscurely.
const cudaPlaceholder = unavailable('cuda', 'the CUDA backend is not part of this Kiln build yet; use the cpu provider');

export const BACKENDS: Backend[] = [cudaPlaceholder, cpuBackend];

export function findBackend(name: string): Backend | undefined {
  return BACKENDS.find((b) => b.name === name);
}
