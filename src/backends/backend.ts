// The backend contract. A backend says whether it can run here (and why not), and turns a model into a runner.
// The build phase (issue 3) extends this with tactics, timing and plan serialization.
import type { Model } from '../ir/graph.js';
import type { Value } from '../ir/tensor.js';

export interface Availability {
  ok: boolean;
  /** Why the backend cannot run here (missing library, no device, ...). */
  reason?: string;
}

export interface Runner {
  /** Run the model on named inputs; returns the requested outputs. */
  run(feeds: Map<string, Value>, fetches: string[]): Promise<Map<string, Value>>;
  release(): void;
}

export interface RunnerOptions {
  /** Threads for intra-op parallelism (CPU). */
  intraOpNumThreads?: number;
}

export interface Backend {
  name: string;
  /** Checked lazily, once, when the backend is first asked for. */
  availability(): Availability;
  createRunner(model: Model, options: RunnerOptions): Promise<Runner>;
}
