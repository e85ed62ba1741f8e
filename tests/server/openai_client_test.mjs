// The official `openai` npm client against a running `dserve serve` (DSERVE_URL): chat and
// completions, streaming and not, usage, stop strings, n=2, logprobs, models, and errors.
// Run by run_openai_client_test.sh; the client comes from the npm cache scripts/setup.sh fills.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { OpenAI } = require(process.env.DSERVE_OPENAI_MODULE);

const client = new OpenAI({ baseURL: `${process.env.DSERVE_URL}/v1`, apiKey: 'unused', maxRetries: 0 });
const model = 'tiny-v3';
const messages = [{ role: 'user', content: 'Explain multi-head latent attention briefly.' }];

test('models.list names the served model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [model]);
});

test('chat completion, whole', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 8, temperature: 0, ignore_eos: true });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 8);
  assert.equal(typeof r.usage.prompt_tokens_details.cached_tokens, 'number');
});

test('chat completion, streamed with usage, equals the whole one', async () => {
  const whole = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, ignore_eos: true });
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 10, temperature: 0, ignore_eos: true, stream: true,
    stream_options: { include_usage: true },
  });
  let content = '', reasoning = '', finish = null, usage = null, chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      content += c.delta.content ?? '';
      reasoning += c.delta.reasoning_content ?? '';
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.ok(chunks >= 3);
  assert.equal(content, whole.choices[0].message.content ?? '');
  assert.equal(reasoning, whole.choices[0].message.reasoning_content ?? '');
  assert.equal(finish, 'length');
  assert.equal(usage.completion_tokens, 10);
});

test('completions, whole and streamed', async () => {
  const prompt = 'The capital of France is';
  const whole = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, ignore_eos: true });
  assert.equal(whole.object, 'text_completion');
  assert.equal(whole.usage.completion_tokens, 6);
  const stream = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, ignore_eos: true, stream: true });
  let text = '';
  for await (const chunk of stream) for (const c of chunk.choices) text += c.text;
  assert.equal(text, whole.choices[0].text);
});

test('a stop string ends the text before it', async () => {
  const base = { model, prompt: 'Once upon a time', max_tokens: 24, temperature: 0, ignore_eos: true };
  const full = (await client.completions.create(base)).choices[0].text;
  assert.ok(full.length >= 8, `short output: ${JSON.stringify(full)}`);
  const stop = full.slice(Math.floor(full.length / 2), Math.floor(full.length / 2) + 3);
  const cut = await client.completions.create({ ...base, stop: [stop] });
  assert.equal(cut.choices[0].finish_reason, 'stop');
  assert.equal(cut.choices[0].text, full.slice(0, full.indexOf(stop)));
});

test('n = 2 gives two choices', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 4, n: 2, temperature: 1, seed: 3, ignore_eos: true });
  assert.deepEqual(r.choices.map((c) => c.index).sort(), [0, 1]);
  assert.equal(r.usage.completion_tokens, 8);
});

test('logprobs with top alternatives', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 5, logprobs: true, top_logprobs: 2, ignore_eos: true });
  const entries = r.choices[0].logprobs.content;
  assert.equal(entries.length, 5);
  for (const e of entries) {
    assert.ok(e.logprob <= 0);
    assert.equal(e.top_logprobs.length, 2);
    assert.ok(Array.isArray(e.bytes));
  }
  const c = await client.completions.create({ model, prompt: 'Hi', max_tokens: 3, logprobs: 2, ignore_eos: true });
  assert.equal(c.choices[0].logprobs.tokens.length, 3);
  assert.equal(c.choices[0].logprobs.top_logprobs.length, 3);
});

test('errors arrive as the client library\'s error classes', async () => {
  await assert.rejects(client.chat.completions.create({ model, messages, temperature: 'hot' }),
    (e) => e instanceof OpenAI.BadRequestError && /temperature/.test(e.message));
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4', messages }),
    (e) => e instanceof OpenAI.NotFoundError);
  await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: 10_000_000 }),
    (e) => e instanceof OpenAI.BadRequestError && /maximum context length/.test(e.message));
});
