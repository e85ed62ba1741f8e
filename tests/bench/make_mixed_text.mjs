#!/usr/bin/env node
// Writes a deterministic mixed-text UTF-8 file for the tokenizer encode benchmark.
//
//   node tests/bench/make_mixed_text.mjs OUT [--bytes N]     (default N = 10485760, 10 MiB)
//
// The file is a sequence of "documents" separated by blank lines, drawn with a fixed-seed PRNG,
// in these proportions of bytes (approximately): English prose / markdown / chat 55%, source
// code 25% (Python, C++, JavaScript, shell, with spaces and tabs), JSON 4%, CJK 7% (Chinese,
// Japanese, Korean), other scripts 3% (Cyrillic, Arabic, Devanagari, Greek), numbers and
// tables 4%, emoji-heavy chat 2%. A few chat documents contain DeepSeek added-token strings
// (<｜User｜>, <｜Assistant｜>, <｜end▁of▁sentence｜>). No line is longer than 2000 bytes, and the
// text avoids U+0085 and U+FEFF (where @lenml/tokenizers and HF tokenizers disagree).
// The file ends with "\n" and is at most N bytes. Same arguments -> same bytes, on any machine.

import fs from "node:fs";

const args = process.argv.slice(2);
const out = args.find((a, i) => !a.startsWith("--") && args[i - 1] !== "--bytes");
const bytesIdx = args.indexOf("--bytes");
const target = bytesIdx >= 0 ? Number(args[bytesIdx + 1]) : 10 * 1024 * 1024;
if (!out || !Number.isFinite(target) || target <= 0) {
  console.error("usage: make_mixed_text.mjs OUT [--bytes N]");
  process.exit(2);
}

// mulberry32
let seed = 0x6d697865 >>> 0;
const R = () => {
  seed = (seed + 0x6d2b79f5) >>> 0;
  let t = seed;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
const int = (lo, hi) => lo + Math.floor(R() * (hi - lo + 1));
const pick = (a) => a[Math.floor(R() * a.length)];
const chance = (p) => R() < p;
// Zipf-like pick: index ~ floor(n * u^2.5) favours the front of the list.
const zipf = (a) => a[Math.min(a.length - 1, Math.floor(a.length * Math.pow(R(), 2.5)))];

// ---------------------------------------------------------------------------------------------
const EN = (
  "the of and to a in is that for it as was with be by on not he I this are or his from at which " +
  "but have an they you were her one all we there been their has would when if so she what no more " +
  "can out up about into who them some then only its could time two may these other than do new " +
  "first any my now such like our over man me even most made after also did many before must " +
  "through back years where much your way well down should because each just those people how too " +
  "little state good very make world still own see men work long get here between both life being " +
  "under never day same another know while last might us great old year off come since against go " +
  "came right used take three himself few house use during without again place around however home " +
  "small found thought went say part once general high upon school every don't does got united left " +
  "number course war until always away something fact though water less public put think almost hand " +
  "enough far took head yet government system better set told nothing night end why called didn't " +
  "eyes find going look asked later knew point next program city business give group toward young " +
  "let room president side social given present several order national possible rather second face " +
  "per among form important often things looked early white case John become large big need four " +
  "within felt along children saw best church ever least power development light thing seemed family " +
  "interest want members mind country area others done turned although open problem God service " +
  "certain kind different thus began door help means sense whole matter perhaps itself York times law " +
  "human line above name example action company hands local show whether five history gave today " +
  "either act feet across taken past quite anything seen having death week experience body word half " +
  "really field am car words already themselves information tell together college shall money period " +
  "held keep sure free seems real behind cannot miss political air question making office brought " +
  "whose special heard major problems ago became federal moment study available known result street " +
  "economic boy position reason change south board individual job society areas west close turn love " +
  "community true court force full model server latency throughput tokenizer inference request " +
  "response cache memory kernel attention expert router batch sequence token vector matrix gradient " +
  "training dataset benchmark performance hardware software network protocol database query index"
).split(" ");
const NAMES = ["Alice", "Bob", "Carol", "Dave", "Eve", "Mallory", "Trent", "Peggy", "Victor", "Walter", "Zhang", "Yuki", "Priya", "Omar", "Olga"];

function sentence() {
  const n = int(4, 28);
  const w = [];
  for (let i = 0; i < n; i++) {
    let x = zipf(EN);
    if (chance(0.03)) x = pick(NAMES);
    if (chance(0.015)) x = String(int(0, 2025));
    if (chance(0.01)) x = `"${x}"`;
    if (chance(0.01)) x = `(${x})`;
    w.push(x);
    if (i < n - 1 && chance(0.07)) w[w.length - 1] += pick([",", ",", ";", ":", " -"]);
  }
  w[0] = w[0][0].toUpperCase() + w[0].slice(1);
  return w.join(" ") + pick([".", ".", ".", ".", "?", "!", "..."]);
}
function paragraph() {
  const s = [];
  for (let i = int(2, 9); i > 0; i--) s.push(sentence());
  return s.join(" ");
}

function english() {
  const kind = R();
  if (kind < 0.55) {
    const p = [];
    for (let i = int(1, 5); i > 0; i--) p.push(paragraph());
    return p.join("\n\n") + "\n";
  }
  if (kind < 0.8) {
    // markdown
    let s = `${"#".repeat(int(1, 3))} ${sentence().replace(/[.?!]+$/, "")}\n\n${paragraph()}\n\n`;
    for (let i = int(2, 6); i > 0; i--) s += `${chance(0.5) ? "-" : `${int(1, 9)}.`} ${sentence()}\n`;
    if (chance(0.5)) s += `\n| name | value | unit |\n|------|------:|------|\n`;
    for (let i = chance(0.5) ? int(2, 5) : 0; i > 0; i--) s += `| ${zipf(EN)} | ${int(0, 99999)} | ${pick(["ms", "MB", "tok/s", "%"])} |\n`;
    s += `\nSee **${zipf(EN)}** and \`${zipf(EN)}_${zipf(EN)}()\` for details.\n`;
    return s;
  }
  // chat transcript, sometimes with DeepSeek added-token strings
  const tags = chance(0.25);
  let s = "";
  for (let i = int(2, 6); i > 0; i--) {
    const q = sentence();
    const a = paragraph();
    s += tags ? `<｜User｜>${q}<｜Assistant｜>${a}<｜end▁of▁sentence｜>\n` : `User: ${q}\nAssistant: ${a}\n`;
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
const IDENT = ["data", "result", "value", "count", "index", "buffer", "request", "response", "config", "items", "node", "tokens", "cache", "offset", "size", "name", "key", "batch", "model", "state", "ctx", "tmp", "x", "y", "i", "j", "n"];
const id = () => (chance(0.4) ? `${pick(IDENT)}_${pick(IDENT)}` : pick(IDENT));
const camel = () => pick(IDENT) + pick(IDENT).replace(/^./, (c) => c.toUpperCase());

function python() {
  const ind = "    ";
  let s = chance(0.3) ? `import ${pick(["os", "sys", "json", "math", "numpy as np", "torch"])}\nfrom ${pick(["typing", "collections", "pathlib"])} import ${pick(["List", "Dict", "defaultdict", "Path", "Optional"])}\n\n\n` : "";
  for (let f = int(1, 3); f > 0; f--) {
    const fn = id();
    s += `def ${fn}(${id()}, ${id()}=${pick(["None", "0", "True", "[]", "'x'"])}):\n`;
    s += `${ind}"""${sentence()}"""\n`;
    for (let i = int(2, 8); i > 0; i--) {
      const r = R();
      if (r < 0.3) s += `${ind}${id()} = ${id()}[${int(0, 9)}] + ${int(1, 100)}\n`;
      else if (r < 0.5) s += `${ind}for ${pick(["i", "j", "k"])} in range(${int(1, 64)}):\n${ind}${ind}${id()}.append(${id()} * ${int(2, 9)})\n`;
      else if (r < 0.7) s += `${ind}if ${id()} ${pick(["==", "!=", "<", ">=", "is", "in"])} ${id()}:\n${ind}${ind}return ${id()}\n`;
      else if (r < 0.85) s += `${ind}# ${sentence()}\n`;
      else s += `${ind}print(f"{${id()}} -> {${id()}!r}")\n`;
    }
    s += `${ind}return ${id()}\n\n\n`;
  }
  return s;
}
function cpp() {
  let s = `#include <${pick(["vector", "string", "cstdint", "memory", "algorithm"])}>\n\nnamespace ${pick(IDENT)} {\n\n`;
  for (let f = int(1, 3); f > 0; f--) {
    s += `// ${sentence()}\n${pick(["int", "std::size_t", "bool", "float", "auto"])} ${camel()}(const std::vector<${pick(["int", "float", "uint8_t"])}>& ${id()}, int ${id()}) {\n`;
    for (let i = int(2, 7); i > 0; i--) {
      const r = R();
      if (r < 0.35) s += `  ${pick(["int", "auto", "float"])} ${id()} = ${id()}[${int(0, 9)}] * ${int(1, 16)};\n`;
      else if (r < 0.6) s += `  for (std::size_t i = 0; i < ${id()}.size(); ++i) {\n    ${id()} += ${id()}[i];\n  }\n`;
      else if (r < 0.8) s += `  if (${id()} ${pick(["==", "!=", "<", ">="])} ${int(0, 255)}) return ${id()};\n`;
      else s += `  std::printf("%d %s\\n", ${id()}, ${id()}.c_str());\n`;
    }
    s += `  return ${id()};\n}\n\n`;
  }
  return s + `}  // namespace\n`;
}
function js() {
  let s = "";
  for (let f = int(1, 3); f > 0; f--) {
    s += `export ${chance(0.5) ? "async " : ""}function ${camel()}(${id()}, { ${id()} = ${int(0, 9)}, ...rest } = {}) {\n`;
    for (let i = int(2, 6); i > 0; i--) {
      const r = R();
      if (r < 0.3) s += `\tconst ${camel()} = ${id()}.map((x) => x * ${int(2, 9)}).filter(Boolean);\n`;
      else if (r < 0.55) s += `\tif (${id()} === ${pick(["null", "undefined", "0", "''"])}) {\n\t\treturn ${id()};\n\t}\n`;
      else if (r < 0.75) s += `\tconsole.log(\`${zipf(EN)}: \${${id()}}\`);\n`;
      else s += `\t// ${sentence()}\n`;
    }
    s += `\treturn { ${id()}, ${id()} };\n}\n\n`;
  }
  return s;
}
function shell() {
  let s = "#!/usr/bin/env bash\nset -euo pipefail\n\n";
  for (let i = int(3, 8); i > 0; i--) {
    const r = R();
    if (r < 0.3) s += `${pick(["ls -la", "cat", "grep -rn", "wc -l", "du -sh"])} "${pick(["$HOME", "/tmp", "./build", "${DIR}"])}/${id()}${pick([".txt", ".log", ".json", ""])}"\n`;
    else if (r < 0.55) s += `for f in ${pick(["*.c", "*.py", "logs/*"])}; do\n\techo "$f" | tr '[:lower:]' '[:upper:]'\ndone\n`;
    else if (r < 0.75) s += `export ${id().toUpperCase()}=${int(0, 65535)}\n`;
    else s += `# ${sentence()}\n`;
  }
  return s;
}
function code() {
  const r = R();
  const [lang, body] = r < 0.4 ? ["python", python()] : r < 0.65 ? ["cpp", cpp()] : r < 0.85 ? ["js", js()] : ["bash", shell()];
  return chance(0.3) ? "```" + lang + "\n" + body + "```\n" : body;
}

// ---------------------------------------------------------------------------------------------
function jsonDoc() {
  const obj = (d) => {
    const o = {};
    for (let i = int(1, 6); i > 0; i--) {
      const k = id();
      const r = R();
      o[k] = d > 0 && r < 0.2 ? obj(d - 1) : r < 0.4 ? int(-1000, 100000) : r < 0.55 ? Math.round(R() * 1e6) / 1e3 : r < 0.65 ? chance(0.5) : r < 0.75 ? null : r < 0.85 ? [int(0, 9), int(0, 99), zipf(EN)] : sentence();
    }
    return o;
  };
  return JSON.stringify(obj(2), null, chance(0.5) ? 2 : undefined) + "\n";
}

// ---------------------------------------------------------------------------------------------
const HANZI = [..."的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又力定见只主没公从知现问想最开意情外间长题机理已性没把样高部总再工物业本相新应全关十点做明内平使动它走模型数据训练推理服务器请求响应缓存"];
const JA = ["私は", "日本語", "を", "勉強", "しています", "東京", "の", "天気", "は", "晴れ", "です", "コンピューター", "プログラム", "データ", "が", "とても", "大切", "ます", "。", "、", "ありがとう", "ございます", "モデル", "推論"];
const KO = ["안녕하세요", "저는", "학생", "입니다", "한국어", "를", "공부", "하고", "있어요", "서울", "의", "날씨", "가", "좋습니다", "데이터", "모델", "컴퓨터", "프로그램", "감사합니다"];
function cjk() {
  const r = R();
  let s = "";
  if (r < 0.6) {
    for (let i = int(1, 6); i > 0; i--) {
      for (let j = int(8, 60); j > 0; j--) s += zipf(HANZI) + (chance(0.08) ? pick(["，", "、", "“", "”"]) : "");
      if (chance(0.1)) s += ` ${zipf(EN)} ${int(1, 999)} `;
      s += pick(["。", "。", "！", "？"]);
    }
  } else if (r < 0.8) {
    for (let i = int(10, 80); i > 0; i--) s += pick(JA);
  } else {
    const w = [];
    for (let i = int(6, 40); i > 0; i--) w.push(pick(KO));
    s = w.join(" ") + ".";
  }
  return s + "\n";
}

const RU = ["Привет", "мир", "это", "текст", "на", "русском", "языке", "модель", "данные", "сервер", "и", "в", "не", "что", "он", "как"];
const AR = ["مرحبا", "بالعالم", "هذا", "نص", "باللغة", "العربية", "في", "من", "على", "النموذج", "البيانات"];
const HI = ["नमस्ते", "दुनिया", "यह", "हिन्दी", "में", "पाठ", "है", "और", "का", "मॉडल", "डेटा"];
const EL = ["Γειά", "σου", "κόσμε", "αυτό", "είναι", "ελληνικό", "κείμενο", "και", "το", "μοντέλο"];
function otherScripts() {
  const words = pick([RU, AR, HI, EL]);
  const w = [];
  for (let i = int(5, 60); i > 0; i--) w.push(pick(words) + (chance(0.1) ? "," : ""));
  return w.join(" ") + pick([".", "।", "؟", "!"]) + "\n";
}

function numbers() {
  let s = "";
  const r = R();
  for (let i = int(3, 15); i > 0; i--) {
    if (r < 0.3) s += `${int(2000, 2025)}-${String(int(1, 12)).padStart(2, "0")}-${String(int(1, 28)).padStart(2, "0")} ${String(int(0, 23)).padStart(2, "0")}:${String(int(0, 59)).padStart(2, "0")}:${String(int(0, 59)).padStart(2, "0")} ${pick(["INFO", "WARN", "ERROR"])} latency=${(R() * 500).toFixed(2)}ms tokens=${int(1, 8192)}\n`;
    else if (r < 0.6) s += `${int(0, 999999)}\t${(R() * 1000).toFixed(3)}\t${int(-50, 50)}\t$${int(1, 99999).toLocaleString("en-US")}.${String(int(0, 99)).padStart(2, "0")}\n`;
    else s += `${sentence().slice(0, -1)} ${int(1, 1e9)} ${(R() * 100).toFixed(1)}% ${int(1, 12)}/${int(1, 28)}/${int(1990, 2030)}.\n`;
  }
  return s;
}

const EMOJI = [..."😀😂🤣😊😍🥰😎🤔😅🙏👍👏🔥✨🎉🚀💯❤💔⭐🌟✅❌⚡🍕☕🐱🐶🌈"].concat(["❤️", "👍🏽", "👩‍💻", "🇺🇸", "🇯🇵", "👨‍👩‍👧", "🏳️‍🌈", "1️⃣"]);
function emoji() {
  let s = "";
  for (let i = int(2, 10); i > 0; i--) {
    s += sentence();
    for (let j = int(1, 4); j > 0; j--) s += (chance(0.5) ? " " : "") + pick(EMOJI);
    s += "\n";
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
const kinds = [
  [0.55, english],
  [0.25, code],
  [0.04, jsonDoc],
  [0.07, cjk],
  [0.03, otherScripts],
  [0.04, numbers],
  [0.02, emoji],
];
// Each kind's documents differ in size, so draw the kind whose byte share is furthest below
// its target (deterministic given the PRNG): the byte proportions then match the weights.
const bytesByKind = kinds.map(() => 0);
const parts = [];
let total = 0;
const enc = new TextEncoder();
for (;;) {
  let k = 0;
  let worst = Infinity;
  for (let i = 0; i < kinds.length; i++) {
    const deficit = bytesByKind[i] - kinds[i][0] * total + R() * 2000; // jitter so kinds interleave
    if (deficit < worst) {
      worst = deficit;
      k = i;
    }
  }
  let doc = kinds[k][1]();
  doc = doc.split("\n").map((l) => (enc.encode(l).length > 2000 ? Array.from(l).slice(0, 600).join("") : l)).join("\n");
  const piece = doc + "\n"; // blank line between documents
  const n = enc.encode(piece).length;
  if (total + n > target) break;
  parts.push(piece);
  total += n;
  bytesByKind[k] += n;
}
const text = parts.join("");
if (/[\u0085\ufeff]/.test(text)) throw new Error("generated text contains U+0085 or U+FEFF");
fs.writeFileSync(out, text);
const share = kinds.map(([, f], i) => `${f.name}=${((100 * bytesByKind[i]) / total).toFixed(1)}%`).join(" ");
console.error(`make_mixed_text: ${total} bytes, ${text.split("\n").length - 1} lines -> ${out}\n  ${share}`);
