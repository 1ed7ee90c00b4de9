// Backend registry, in priority order. A backend that cannot run here says why; InferenceSession reports every
// requested backend's reason when none can be used.
import type { Backend } from './backend.js';
import { cpuBackend } from './cpu/index.js';

import { cudaBackend } from './cuda/index.js';

export const BACKENDS: Backend[] = [cudaBackend, cpuBackend];

export function findBackend(name: string): Backend | undefined {
  return BACKENDS.find((b) => b.name === name);
}
