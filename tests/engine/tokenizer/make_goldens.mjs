#!/usr/bin/env node
// Golden vectors for the C++ DeepSeek-V3 tokenizer, from @lenml/tokenizers (a port of
// transformers.js) over the real tokenizer.json / tokenizer_config.json.
//
//   node tests/engine/tokenizer/make_goldens.mjs
//
// Reads  corpus.jsonl (make_corpus.mjs) beside this file.
// Writes goldens.jsonl        {"text": str, "ids": [int], "decoded": str}
//          ids     = encode(text, add_special_tokens=false): no BOS, added-token strings in the
//                    text still become their ids
//          decoded = decode(ids, skip_special_tokens=false)
//        decode_goldens.jsonl {"kind": str, "ids": [int], "skip_special_tokens": bool, "decoded": str}
//          id sequences built to exercise the decoder: byte tokens forming invalid UTF-8
//          (lone continuation bytes, truncated sequences, overlong forms, surrogates, > U+10FFFF),
//          vocab tokens that are partial characters, random ids, added/special tokens; each
//          sequence appears twice, with skip_special_tokens false and true.
// Prints a summary (counts, round-trip failures) on stdout; exits 1 if a sanity check fails.
// Installs @lenml/tokenizers@3.7.2 into the cache on first use (node_env.mjs).

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jsonLine, lenmlDecode, lenmlEncode, loadLenmlTokenizer, readJsonl, LENML_VERSION } from "./node_env.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const corpusPath = path.join(here, "corpus.jsonl");
const goldensPath = path.join(here, "goldens.jsonl");
const decodePath = path.join(here, "decode_goldens.jsonl");

const { tokenizer, files } = await loadLenmlTokenizer();
const tj = files.tokenizerJSON;
const vocab = tj.model.vocab; // token string -> id, ids 0..127999
const added = tj.added_tokens; // ids 0..2 and 128000..128814
const addedIds = new Set(added.map((t) => t.id));
const specialIds = new Set(added.filter((t) => t.special).map((t) => t.id));
const maxId = [...Object.values(vocab), ...added.map((t) => t.id)].reduce((a, b) => Math.max(a, b), 0);

let failures = 0;
function check(cond, msg) {
  if (!cond) {
    failures++;
    console.log(`CHECK FAILED: ${msg}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Encode goldens.
const corpus = readJsonl(corpusPath);
const goldenLines = [];
const roundTripFailures = [];
let totalIds = 0;
for (const text of corpus) {
  const ids = lenmlEncode(tokenizer, text);
  check(Array.isArray(ids) && ids.every((i) => Number.isInteger(i) && i >= 0 && i <= maxId), `bad ids for ${JSON.stringify(text)}`);
  const decoded = lenmlDecode(tokenizer, ids, false);
  if (decoded !== text) roundTripFailures.push({ text, decoded });
  totalIds += ids.length;
  goldenLines.push(jsonLine({ text, ids, decoded }));
}
fs.writeFileSync(goldensPath, goldenLines.join("\n") + "\n");

// ---------------------------------------------------------------------------------------------
// Decode goldens.
// GPT-2 byte <-> unicode table (computed here, independently of the library).
const byteToChar = new Map();
{
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (bs.includes(b)) byteToChar.set(b, String.fromCharCode(b));
    else byteToChar.set(b, String.fromCharCode(256 + n++));
  }
}
const charToByte = new Map([...byteToChar].map(([b, c]) => [c, b]));
const byteId = (b) => {
  const id = vocab[byteToChar.get(b)];
  if (id === undefined) throw new Error(`no vocab token for byte ${b}`);
  return id;
};
const bytesToIds = (bytes) => bytes.map(byteId);
const asciiIds = (s) => bytesToIds([...Buffer.from(s, "utf8")]);
const idOf = (content) => {
  const t = added.find((x) => x.content === content);
  if (!t) throw new Error(`no added token ${content}`);
  return t.id;
};
const BOS = idOf("<｜begin▁of▁sentence｜>");
const EOS = idOf("<｜end▁of▁sentence｜>");
const PAD = idOf("<｜▁pad▁｜>");
const EOT = idOf("<|EOT|>");
const USER = idOf("<｜User｜>");
const ASSISTANT = idOf("<｜Assistant｜>");
const TCB = idOf("<｜tool▁calls▁begin｜>");
const PH0 = idOf("<｜place▁holder▁no▁0｜>");
const PH799 = idOf("<｜place▁holder▁no▁799｜>");

let seed = 0x0dec0de5 >>> 0;
const rand = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const randInt = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));
const pick = (arr) => arr[Math.floor(rand() * arr.length)];

const sequences = []; // [kind, ids]
const seq = (kind, ids) => sequences.push([kind, ids]);

// Single bytes: continuation bytes, lone lead bytes, bytes that never occur in UTF-8.
for (const b of [0x80, 0x81, 0x8f, 0x90, 0x9f, 0xa0, 0xbf]) seq("lone_continuation_byte", bytesToIds([b]));
for (const b of [0xc2, 0xdf, 0xe0, 0xe4, 0xed, 0xef, 0xf0, 0xf4]) seq("lone_lead_byte", bytesToIds([b]));
for (const b of [0xc0, 0xc1, 0xf5, 0xf7, 0xf8, 0xfb, 0xfc, 0xfe, 0xff]) seq("never_valid_byte", bytesToIds([b]));
for (const b of [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x7f]) seq("ascii_control_byte", bytesToIds([b]));

// Constructed byte sequences.
const byteCases = [
  ["truncated", [0xe4, 0xb8]],
  ["truncated", [0xf0, 0x9f]],
  ["truncated", [0xf0, 0x9f, 0x98]],
  ["truncated", [0xc3]],
  ["truncated_then_ascii", [0xe4, 0xb8, 0x41]],
  ["truncated_then_ascii", [0xf0, 0x9f, 0x98, 0x20, 0x61]],
  ["truncated_then_lead", [0xe4, 0xb8, 0xe4, 0xb8, 0xad]],
  ["truncated_then_lead", [0xf0, 0x9f, 0xf0, 0x9f, 0x98, 0x80]],
  ["ascii_then_truncated", [0x61, 0x62, 0xe4]],
  ["overlong", [0xc0, 0xaf]],
  ["overlong", [0xc1, 0xbf]],
  ["overlong", [0xc0, 0x80]],
  ["overlong", [0xe0, 0x80, 0xaf]],
  ["overlong", [0xe0, 0x9f, 0xbf]],
  ["overlong", [0xf0, 0x80, 0x80, 0xaf]],
  ["overlong", [0xf0, 0x8f, 0xbf, 0xbf]],
  ["surrogate", [0xed, 0xa0, 0x80]],
  ["surrogate", [0xed, 0xbf, 0xbf]],
  ["surrogate_pair_cesu8", [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]],
  ["valid_edge", [0xed, 0x9f, 0xbf]],
  ["valid_edge", [0xee, 0x80, 0x80]],
  ["valid_edge", [0xf4, 0x8f, 0xbf, 0xbf]],
  ["valid_edge", [0xef, 0xbf, 0xbf]],
  ["valid_edge", [0xef, 0xbf, 0xbd]],
  ["above_max", [0xf4, 0x90, 0x80, 0x80]],
  ["above_max", [0xf7, 0xbf, 0xbf, 0xbf]],
  ["five_six_byte_form", [0xf8, 0x88, 0x80, 0x80, 0x80]],
  ["five_six_byte_form", [0xfc, 0x84, 0x80, 0x80, 0x80, 0x80]],
  ["valid_split_across_tokens", [0xe4, 0xb8, 0xad]],
  ["valid_split_across_tokens", [0xf0, 0x9f, 0x98, 0x80]],
  ["valid_split_across_tokens", [0xc3, 0xa9, 0x20, 0xe2, 0x82, 0xac]],
  ["continuation_run", [0x80, 0x80, 0x80, 0x80]],
  ["continuation_run", [0x61, 0x80, 0xbf, 0x62]],
  ["extra_continuation", [0xc3, 0xa9, 0xa9]],
  ["extra_continuation", [0xe4, 0xb8, 0xad, 0xad, 0xad]],
  ["bom", [0xef, 0xbb, 0xbf]],
  ["bom", [0xef, 0xbb, 0xbf, 0x68, 0x69]],
  ["bom", [0x68, 0xef, 0xbb, 0xbf, 0x69]],
  ["bom", [0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]],
  ["nul", [0x61, 0x00, 0x62]],
  ["mixed_invalid", [0x48, 0x69, 0xff, 0xe4, 0xb8, 0xad, 0xc0, 0xaf, 0xf0, 0x9f, 0x98, 0x80, 0xed, 0xa0, 0x80, 0x21]],
];
for (const [kind, bytes] of byteCases) seq(kind, bytesToIds(bytes));
seq("all_bytes_in_order", bytesToIds([...Array(256).keys()]));
seq("all_bytes_reversed", bytesToIds([...Array(256).keys()].reverse()));

// Invalid bytes next to added tokens (the decoder must not merge bytes across an added token,
// except that a token skipped by skip_special_tokens is gone before decoding).
seq("bytes_around_added", [...bytesToIds([0xe4, 0xb8]), USER, ...bytesToIds([0xad])]);
seq("bytes_around_added", [USER, ...bytesToIds([0x80, 0x80])]);
seq("bytes_around_added", [...bytesToIds([0xf0, 0x9f]), BOS, ...bytesToIds([0x98, 0x80])]);
seq("bytes_around_added", [...bytesToIds([0xe4]), EOT, ...bytesToIds([0xb8, 0xad])]);
seq("bytes_around_added", [...bytesToIds([0xe4, 0xb8]), PH0, ...bytesToIds([0xad])]);
seq("bytes_around_added", [...bytesToIds([0xc3]), ASSISTANT, ...bytesToIds([0xa9]), EOS]);
seq("bytes_around_added", [BOS, ...bytesToIds([0xef, 0xbb, 0xbf]), ...asciiIds("hi"), EOS]);

// Added / special tokens.
const namedAdded = added.filter((t) => !t.content.includes("place▁holder")).map((t) => t.id);
seq("all_named_added", namedAdded);
seq("all_named_added_reversed", [...namedAdded].reverse());
seq("specials_only", [BOS]);
seq("specials_only", [BOS, EOS, PAD]);
seq("specials_only", [EOT]);
seq("specials_only", [PH0, PH799]);
seq("non_special_added_only", [USER]);
seq("non_special_added_only", [USER, ASSISTANT, TCB]);
seq("chat_like", [BOS, ...asciiIds("You are helpful."), USER, ...asciiIds("Hi"), ASSISTANT, ...asciiIds("Hello!"), EOS]);
seq("chat_like", [BOS, BOS, ...asciiIds(" x "), EOS, EOS]);
seq("chat_like", [...asciiIds("a"), EOT, ...asciiIds("b"), PAD, ...asciiIds("c")]);
for (const text of ["Hello world", " spaced  out ", "中文", "😀👍🏽", "don't", "a\nb", "1234567"]) {
  const ids = lenmlEncode(tokenizer, text);
  seq("encoded_text_with_specials", [BOS, ...ids, EOS]);
  seq("encoded_text_with_specials", [USER, ...ids, ASSISTANT, ...ids, PH0]);
}

// Vocab tokens whose bytes are not valid UTF-8 on their own (partial characters).
const partialTokenIds = [];
const fatal = new TextDecoder("utf-8", { fatal: true });
for (const [token, id] of Object.entries(vocab)) {
  if (addedIds.has(id)) continue;
  const bytes = Uint8Array.from([...token].map((c) => charToByte.get(c)));
  if (bytes.length < 2) continue;
  try {
    fatal.decode(bytes);
  } catch {
    partialTokenIds.push(id);
  }
}
partialTokenIds.sort((a, b) => a - b);
for (let i = 0; i < 60; i++) {
  const n = randInt(1, 5);
  const ids = [];
  for (let j = 0; j < n; j++) ids.push(pick(partialTokenIds));
  if (rand() < 0.3) ids.splice(randInt(0, ids.length), 0, ...asciiIds(pick(["a", " ", "\n", "x y"])));
  seq("partial_char_tokens", ids);
}

// Random ids over the whole id space (valid ids only: 0..maxId).
for (let i = 0; i < 50; i++) {
  const n = randInt(1, 24);
  const ids = [];
  for (let j = 0; j < n; j++) ids.push(randInt(0, maxId));
  seq("random_ids", ids);
}
// Random text ids mixed with added ids.
const addedList = [...addedIds];
for (let i = 0; i < 30; i++) {
  const n = randInt(2, 16);
  const ids = [];
  for (let j = 0; j < n; j++) ids.push(rand() < 0.35 ? pick(addedList) : rand() < 0.5 ? randInt(0, 127999) : pick(partialTokenIds));
  seq("random_mixed_added", ids);
}

const decodeLines = [];
const kindCounts = new Map();
for (const [kind, ids] of sequences) {
  check(ids.length > 0 && ids.every((i) => Number.isInteger(i) && i >= 0 && i <= maxId), `bad decode ids (${kind})`);
  kindCounts.set(kind, (kindCounts.get(kind) || 0) + 1);
  for (const skip of [false, true]) {
    const decoded = lenmlDecode(tokenizer, ids, skip);
    check(typeof decoded === "string", `decode did not return a string (${kind})`);
    decodeLines.push(jsonLine({ kind, ids, skip_special_tokens: skip, decoded }));
  }
}
fs.writeFileSync(decodePath, decodeLines.join("\n") + "\n");

// ---------------------------------------------------------------------------------------------
// Sanity checks on the library's behaviour that the goldens rely on.
check(lenmlEncode(tokenizer, "").length === 0, "empty string encodes to []");
check(tokenizer.encode("Hello").length === lenmlEncode(tokenizer, "Hello").length, "@lenml adds no BOS even with add_special_tokens=true");
check(JSON.stringify(lenmlEncode(tokenizer, "<｜User｜>")) === JSON.stringify([USER]), "added token in text -> its id");
check(lenmlDecode(tokenizer, bytesToIds([0x80]), false) === "\ufffd", "lone continuation byte -> U+FFFD");
check(lenmlDecode(tokenizer, bytesToIds([0xef, 0xbb, 0xbf]), false) === "\ufeff", "BOM bytes are kept");
check(lenmlDecode(tokenizer, [BOS, USER], true) === "<｜User｜>", "skip_special_tokens drops special, keeps non-special added");
check(lenmlDecode(tokenizer, asciiIds("a ."), false) === "a .", "no clean_up_tokenization_spaces");

console.log(`@lenml/tokenizers ${LENML_VERSION}, tokenizer files in ${files.dir}`);
console.log(`node ${process.versions.node} (ICU ${process.versions.icu}, Unicode ${process.versions.unicode})`);
console.log(`goldens.jsonl: ${corpus.length} strings, ${totalIds} ids`);
console.log(
  `round trip decode(encode(x)) == x: ${corpus.length - roundTripFailures.length}/${corpus.length}` +
    (roundTripFailures.length ? `; failures:` : ""),
);
for (const f of roundTripFailures) console.log(`  ${JSON.stringify(f.text)} -> ${JSON.stringify(f.decoded)}`);
console.log(`decode_goldens.jsonl: ${sequences.length} id sequences x 2 = ${decodeLines.length} lines`);
console.log(`  ${[...kindCounts].map(([k, n]) => `${k}=${n}`).join(" ")}`);
console.log(`  partial-character vocab tokens found: ${partialTokenIds.length}`);
const withFffd = decodeLines.filter((l) => l.includes("\ufffd") || l.includes("\\ufffd")).length;
console.log(`  decodes containing U+FFFD: ${withFffd}`);
if (failures) {
  console.log(`${failures} sanity check(s) failed`);
  process.exit(1);
}
