// config.json of a Hugging Face decoder model -> the few numbers Kiln's LLM runtime needs, one shape for every family.
import fs from 'node:fs';
import path from 'node:path';
import { ModelError } from '../ir/errors.js';

export type ModelFamily = 'gpt2' | 'llama';

export interface ModelConfig {
  family: ModelFamily;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  intermediateSize: number;
  maxPositions: number;
  normEps: number;
  /** RoPE base (llama). */
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** Linear layers carry biases (gpt2 always; llama when attention_bias / mlp_bias). */
  attentionBias: boolean;
  mlpBias: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
}

type Json = Record<string, unknown>;

const ids = (v: unknown): number[] => (Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : typeof v === 'number' ? [v] : []);

function need(cfg: Json, file: string, ...keys: string[]): number {
  for (const k of keys) if (typeof cfg[k] === 'number') return cfg[k] as number;
  throw new ModelError(`${file}: missing '${keys[0]}' (a number).`, { hint: 'Use the config.json written by Hugging Face transformers for this model.' });
}

/** Normalize a parsed config.json (plus generation_config.json's eos ids when given). */
export function parseModelConfig(cfg: Json, file = 'config.json', generation: Json = {}): ModelConfig {
  const type = cfg.model_type;
  const eos = [...new Set([...ids(cfg.eos_token_id), ...ids(generation.eos_token_id)])];
  const bos = typeof cfg.bos_token_id === 'number' ? cfg.bos_token_id : undefined;
  if (type === 'gpt2') {
    const hidden = need(cfg, file, 'n_embd', 'hidden_size');
    const heads = need(cfg, file, 'n_head', 'num_attention_heads');
    const act = cfg.activation_function ?? 'gelu_new';
    if (act !== 'gelu_new' && act !== 'gelu_pytorch_tanh') {
      throw new ModelError(`${file}: activation_function '${String(act)}' is not supported for gpt2 (supported: gelu_new, gelu_pytorch_tanh).`);
    }
    return {
      family: 'gpt2', vocabSize: need(cfg, file, 'vocab_size'), hiddenSize: hidden, numLayers: need(cfg, file, 'n_layer', 'num_hidden_layers'),
      numHeads: heads, numKvHeads: heads, headDim: hidden / heads,
      intermediateSize: typeof cfg.n_inner === 'number' ? cfg.n_inner : 4 * hidden,
      maxPositions: need(cfg, file, 'n_positions', 'max_position_embeddings'), normEps: (cfg.layer_norm_epsilon as number) ?? 1e-5,
      ropeTheta: 0, tieWordEmbeddings: cfg.tie_word_embeddings !== false, attentionBias: true, mlpBias: true, bosTokenId: bos, eosTokenIds: eos,
    };
  }
  if (type === 'llama') {
    const hidden = need(cfg, file, 'hidden_size');
    const heads = need(cfg, file, 'num_attention_heads');
    const rope = (cfg.rope_parameters ?? cfg.rope_scaling ?? {}) as Json;
    const ropeType = rope.rope_type ?? rope.type ?? 'default';
    if (ropeType !== 'default') throw new ModelError(`${file}: rope type '${String(ropeType)}' is not supported yet (supported: default).`);
    const act = cfg.hidden_act ?? 'silu';
    if (act !== 'silu') throw new ModelError(`${file}: hidden_act '${String(act)}' is not supported for llama (supported: silu).`);
    return {
      family: 'llama', vocabSize: need(cfg, file, 'vocab_size'), hiddenSize: hidden, numLayers: need(cfg, file, 'num_hidden_layers'),
      numHeads: heads, numKvHeads: typeof cfg.num_key_value_heads === 'number' ? cfg.num_key_value_heads : heads,
      headDim: typeof cfg.head_dim === 'number' ? cfg.head_dim : hidden / heads, intermediateSize: need(cfg, file, 'intermediate_size'),
      maxPositions: need(cfg, file, 'max_position_embeddings'), normEps: (cfg.rms_norm_eps as number) ?? 1e-6,
      ropeTheta: (rope.rope_theta as number) ?? (cfg.rope_theta as number) ?? 10000, tieWordEmbeddings: cfg.tie_word_embeddings === true,
      attentionBias: cfg.attention_bias === true, mlpBias: cfg.mlp_bias === true, bosTokenId: bos, eosTokenIds: eos,
    };
  }
  throw new ModelError(`${file}: model_type '${String(type)}' is not supported by Kiln's LLM runtime.`, { hint: 'Supported model types: gpt2, llama.' });
}

export function readJson(file: string): Json {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as Json;
  } catch (e) {
    throw new ModelError(`cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
}

/** Read DIR/config.json (and DIR/generation_config.json when present). */
export function loadModelConfig(dir: string): ModelConfig {
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new ModelError(`${dir}: no config.json.`, { hint: 'Point at a Hugging Face model folder (config.json, *.safetensors, tokenizer.json).' });
  const gen = path.join(dir, 'generation_config.json');
  return parseModelConfig(readJson(file), file, fs.existsSync(gen) ? readJson(gen) : {});
}
