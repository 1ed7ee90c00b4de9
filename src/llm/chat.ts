// Chat templates: the model's Jinja template (chat_template.jinja, or tokenizer_config.json's chat_template) rendered
// with @huggingface/jinja. Templates are full Jinja programs (loops, filters, macros, namespace()), and the package is
// a small, maintained implementation written for exactly these templates, so we use it rather than write our own.
import fs from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { InputError, ModelError } from '../ir/errors.js';

export interface ChatMessage {
  role: string;
  content: string;
}

export class ChatTemplate {
  private readonly template: Template;
  constructor(readonly source: string, private readonly specials: Record<string, string>, readonly origin: string) {
    try {
      this.template = new Template(source);
    } catch (e) {
      throw new ModelError(`${origin}: the chat template does not parse: ${(e as Error).message}`, { cause: e });
    }
  }

  /** The template of a model folder, or undefined when it has none. */
  static fromDir(dir: string): ChatTemplate | undefined {
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const cfg = fs.existsSync(cfgFile) ? (JSON.parse(fs.readFileSync(cfgFile, 'utf8')) as Record<string, unknown>) : {};
    const specials: Record<string, string> = {};
    for (const k of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
      const v = cfg[k] as string | { content?: string } | undefined;
      const s = typeof v === 'string' ? v : v?.content;
      if (typeof s === 'string') specials[k] = s;
    }
    const jinja = path.join(dir, 'chat_template.jinja');
    if (fs.existsSync(jinja)) return new ChatTemplate(fs.readFileSync(jinja, 'utf8'), specials, jinja);
    let t = cfg.chat_template as string | { name: string; template: string }[] | undefined;
    if (Array.isArray(t)) t = (t.find((x) => x.name === 'default') ?? t[0])?.template;
    return typeof t === 'string' ? new ChatTemplate(t, specials, cfgFile) : undefined;
  }

  render(messages: ChatMessage[], addGenerationPrompt = true): string {
    try {
      return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, ...this.specials });
    } catch (e) {
      throw new InputError(`${this.origin}: rendering the chat template failed: ${(e as Error).message}`, { cause: e });
    }
  }
}
