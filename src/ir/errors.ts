/**
 * Every error Kiln throws on purpose. The message says what went wrong and where (file, node, input); `hint`
 * says how to fix it when a fix is known, and is appended to the message as a "Note:" line.
 */
export class KilnError extends Error {
  readonly hint?: string;
  readonly code: string;
  constructor(message: string, opts: { hint?: string; code?: string; cause?: unknown } = {}) {
    super(opts.hint ? `${message}\nNote: ${opts.hint}` : message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = 'KilnError';
    this.hint = opts.hint;
    this.code = opts.code ?? 'KILN_ERROR';
  }
}

/** The model file is malformed, truncated, hostile, or uses something Kiln cannot read. */
export class ModelError extends KilnError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, code: 'MODEL_ERROR' });
    this.name = 'ModelError';
  }
}

/** The caller passed wrong inputs (names, types, shapes) or options. */
export class InputError extends KilnError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, code: 'INPUT_ERROR' });
    this.name = 'InputError';
  }
}

/** A kernel failed while running a node. */
export class ExecutionError extends KilnError {
  constructor(message: string, opts: { hint?: string; cause?: unknown } = {}) {
    super(message, { ...opts, code: 'EXECUTION_ERROR' });
    this.name = 'ExecutionError';
  }
}
