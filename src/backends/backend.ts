// The backend contract. A backend says whether it can run here (and why not), describes the device (for plans and
// timing caches), offers candidate kernels ("tactics") per node for the builder to time, stores compiled kernels
// in the plan, and turns a (planned) model into a runner.
import type { Model, Node, ValueType } from '../ir/graph.js';
import type { Value } from '../ir/tensor.js';
import type { DType } from '../ir/dtype.js';
import type { DeviceSignature } from '../build/plan.js';

export interface Availability {
  ok: boolean;
  /** Why the backend cannot run here (missing library, no device, ...). */
  reason?: string;
}

export interface Tactic {
  name: string;
  /** Scratch memory the tactic needs beyond its inputs and outputs. */
  workspaceBytes?: number;
  /** Run one node with this implementation (used for timing at build time). */
  run(node: Node, inputs: (Value | undefined)[], opsets: Map<string, number>): Value[] | Promise<Value[]>;
  /** Optional: the tactic's own timing (ms) on these inputs, where it can measure itself more steadily than wall time
   * around `run` (undefined: it cannot run them). The builder uses it instead of timing `run`. `consts`: which inputs
   * are the model's constants (weights), which a run meets cold. */
  time?(node: Node, inputs: (Value | undefined)[], consts?: boolean[]): number | undefined;
  /** The type it multiplies in where that differs from its tensors' (a math mode, Backend.fpmath): the plan's layer
   * precision. */
  precision?: 'bf16';
}

export interface Runner {
  /** Run the model on named inputs; returns the requested outputs. `context` is one from `createContext`. */
  run(feeds: Map<string, Value | DeviceRef>, fetches: string[], hooks?: RunHooks, context?: RunnerContext, io?: RunIO): Promise<Map<string, Value | DeviceRef>>;
  /** Whether feeds and outputs may be DeviceRefs (GPU backends). */
  readonly deviceIO?: boolean;
  /** Whether \`run\` honours RunHooks.onLayerTime itself (else the engine turns it into onLayer). */
  readonly tracesLayers?: boolean;
  /**
   * Per-context state (the CUDA backend: a stream, captured graphs, events), so an engine's contexts run at once.
   * Backends without it run every context's work through the runner's own state.
   */
  createContext?(): RunnerContext;
  /**
   * A run without hooks in a backend's steady state (the CPU runner's recorded replay), or undefined where there is
   * none and \`run\` must go. \`wrap\` turns the outputs into the caller's result inside the backend's own completion
   * (one promise for the whole run).
   */
  runReplayed?<R>(feeds: Map<string, Value>, fetches: string[], wrap: (outputs: Map<string, Value>) => R): Promise<R> | undefined;
  release(): void;
}

/**
 * A tensor in device memory (a GPU backend's feed or output instead of a host Value). Feeds are read where they
 * are; outputs asked for on the device come back as fresh blocks the caller owns.
 */
export interface DeviceRef {
  readonly kind: 'device';
  readonly dtype: DType;
  readonly dims: readonly number[];
  readonly deviceId: number;
  readonly ptr: number;
  readonly bytes: number;
}

export function isDeviceRef(v: unknown): v is DeviceRef {
  return typeof v === 'object' && v !== null && (v as DeviceRef).kind === 'device';
}

export interface RunIO {
  /** Return outputs as DeviceRefs (fresh device blocks the caller frees) instead of host values. */
  deviceOutputs?: boolean;
}

/** A backend's state for one execution context; released with the context or the engine. */
export interface RunnerContext {
  release(): void;
}

/** Parts of one inference a backend reports timing for (bench, profile): input transfer, compute, output transfer. */
export type RunPhase = 'h2d' | 'compute' | 'd2h';

export interface RunHooks {
  /** Called after each layer with its outputs, its time and its start (performance.now() ms) (profiling, --mark-all). */
  onLayer?: (node: Node, outputs: Value[], ms: number, startMs?: number) => void;
  /** Called with the start and end (performance.now() ms, device times mapped to the host clock) of each phase. */
  onPhase?: (phase: RunPhase, startMs: number, endMs: number) => void;
  /** Keep every intermediate value in the result. */
  keepAll?: boolean;
  /** The caller keeps the layer outputs onLayer receives (so backends must not reuse their buffers). */
  retainOutputs?: boolean;
  /**
   * Times only (a profile): each layer's time (ms) once the run ends. A runner that can time layers inside its fast
   * path (Runner.tracesLayers: the CPU's replayed runs, traced by the library) does so, with the layers run as they
   * always are; for any other the engine turns this into onLayer.
   */
  onLayerTime?: (node: Node, ms: number) => void;
}

export interface RunnerOptions {
  /** Threads for intra-op parallelism (CPU). */
  intraOpNumThreads?: number;
  /** CPU: replayed runs on the calling thread (EngineLoadOptions.runOnCallingThread). */
  runOnCallingThread?: boolean;
  /** The plan's precision flag ('tf32' lets fp32 GEMMs use TF32 tensor cores). */
  precision?: string;
  /** Capture inferences into CUDA graphs (cuda; default true). */
  cudaGraph?: boolean;
  /** Tactic chosen for each layer (by node name), from a plan. */
  tactics?: Record<string, string>;
  /** Compiled kernels stored in the plan. */
  kernels?: Map<string, Uint8Array>;
  /** Which device of this backend's kind (GPU index; the CPU backend has only 0). */
  deviceId?: number;
}

export interface Backend {
  name: string;
  /** Checked lazily, once, when the backend is first asked for. */
  availability(): Availability;
  signature(): DeviceSignature;
  /** Convolution layout the backend's kernels want; the optimizer converts to it (default NCHW). */
  preferredLayout?: 'NCHW' | 'NHWC';
  /**
   * Candidate implementations of a node, best guess first. `typeOf` gives value types at the profile's opt shapes
   * (the graph itself keeps symbolic shapes), for backends that generate shape-specialized code.
   */
  tactics(node: Node, model: Model, typeOf?: (name: string) => ValueType | undefined, precision?: string): Tactic[];
  /** Build precisions this backend takes as a math mode: tensors stay fp32 (the precision pass leaves the graph as it
   * is) and `tactics` offers kernels that multiply in the reduced type inside (the CPU's bf16). */
  fpmath?: string[];
  /** Compiled kernels to store in the plan (blob name -> bytes). */
  serializeKernels(layers: { node: Node; tactic: Tactic }[]): [string, Uint8Array][];
  /**
   * Kernels a backend can only generate by running the model (shapes baked in at the profile's opt shapes): run it
   * once on the device and return the compiled kernels for the plan, so that loading the plan needs no compiler.
   */
  compileForPlan?(model: Model, inputShapes: Record<string, number[]>, deviceId?: number): Promise<[string, Uint8Array][]>;
  createRunner(model: Model, options: RunnerOptions): Promise<Runner>;
}
