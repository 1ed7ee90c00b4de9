import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '../../src/llm/tokenizer.js';
import { ChatTemplate } from '../../src/llm/chat.js';

const FIX = path.join(import.meta.dirname, '../fixtures/llm');

describe.each(['gpt2-tiny', 'llama-tiny'])('tokenizer %s (against Hugging Face tokenizers 0.23)', (name) => {
  const dir = path.join(FIX, name);
  const tok = Tokenizer.fromDir(dir);
  const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8'));

  it('encodes every case to the same ids', () => {
    for (const c of expected.encode) expect(tok.encode(c.text), JSON.stringify(c.text)).toEqual(c.ids);
    for (const g of expected.greedy) expect(tok.encode(g.prompt)).toEqual(g.prompt_ids);
  });

  it('decodes every case to the same text', () => {
    for (const c of expected.decode) expect(tok.decode(c.ids)).toBe(c.text);
    for (const g of expected.greedy) expect(tok.decode(g.output_ids)).toBe(g.text);
  });

  it('skips special tokens on request', () => {
    const ids = tok.encode('Hello, world!');
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('Hello, world!');
  });
});

describe('chat template', () => {
  it('renders the llama template as transformers does', () => {
    const dir = path.join(FIX, 'llama-tiny');
    const expected = JSON.parse(fs.readFileSync(path.join(dir, 'expected.json'), 'utf8'));
    expect(ChatTemplate.fromDir(dir)!.render(expected.chat.messages, false)).toBe(expected.chat.text);
  });

  it('is absent when the model has none', () => {
    expect(ChatTemplate.fromDir(path.join(FIX, 'gpt2-tiny'))).toBeUndefined();
  });
});
