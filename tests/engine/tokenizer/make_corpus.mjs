#!/usr/bin/env node
// Writes tests/engine/tokenizer/corpus.jsonl: one JSON string per line, deterministic (fixed
// material plus a seeded PRNG; the added-token strings come from tokenizer.json's added_tokens).
//
//   node tests/engine/tokenizer/make_corpus.mjs [OUT]      (default: corpus.jsonl beside this file)
//
// Prints the number of strings per category on stderr. Needs only the tokenizer files
// (scripts/setup.sh), no npm package.

import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { jsonLine, readTokenizerFiles } from "./node_env.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] || path.join(here, "corpus.jsonl");

// ---------------------------------------------------------------------------------------------
// Deterministic PRNG (mulberry32).
function rng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  next.int = (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)); // inclusive
  next.pick = (arr) => arr[Math.floor(next() * arr.length)];
  return next;
}
const R = rng(0x5eed_d5e1);
const cp = (...cps) => String.fromCodePoint(...cps);

const categories = new Map(); // name -> strings
function add(category, ...strings) {
  if (!categories.has(category)) categories.set(category, []);
  for (const s of strings) {
    if (typeof s !== "string") throw new Error(`non-string in ${category}`);
    categories.get(category).push(s);
  }
}

// ---------------------------------------------------------------------------------------------
// English prose.
const englishSentences = [
  "Hello world",
  "Hello, world!",
  "The quick brown fox jumps over the lazy dog.",
  "I'm sure they'll say it's fine, but we've seen what happens when you don't check.",
  "She said, \"It isn't mine\" -- and left.",
  "Don't stop believing; hold on to that feeling.",
  "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
  "Mr. and Mrs. Dursley, of number four, Privet Drive, were proud to say that they were perfectly normal, thank you very much.",
  "Call me Ishmael.",
  "What's the difference between a tokenizer and a pre-tokenizer?",
  "The U.S.A. and the U.K. signed the agreement on Jan. 5th.",
  "e.g. this, i.e. that, etc.",
  "ALL CAPS SENTENCE WITH SHOUTING!!!",
  "camelCase snake_case kebab-case PascalCase SCREAMING_SNAKE_CASE",
  "Re-examine the co-operation of the well-known twenty-one people.",
  "    Leading spaces before a sentence.",
  "Trailing spaces after a sentence.    ",
  "The year 1984 was followed by 1985, then 2001 and 2024.",
  "Price: $19.99 (was $25.00), save 20%!",
  "He scored 3 goals in 90 minutes; the team won 4-1.",
  "Their 'quoted' words and \"double quoted\" words and `backticked` words.",
  "A sentence with a semicolon; a colon: and a dash - and an ellipsis...",
  "Why? Because! Really?! Yes!?",
  "o'clock, rock 'n' roll, 'tis, y'all, ma'am",
  "I'd've thought you'd know.",
  "The function returns NULL when the input is empty.",
  "Tokenization is the process of converting a sequence of characters into a sequence of tokens.",
  "In 1492, Columbus sailed the ocean blue.",
  "x",
  "a b c d e f g",
  "I",
  "OK",
  "ok.",
  "The end.",
];
add("english", ...englishSentences);
const englishParagraphs = [
  "Large language models are trained on vast amounts of text. The text is first split into tokens, " +
    "which are then mapped to integer ids. At inference time the same tokenizer must be used, otherwise " +
    "the model sees inputs it was never trained on.\n\nThis paragraph is the second one. It has two sentences.",
  "Once upon a time, in a land far, far away, there lived a king who had three daughters. The youngest " +
    "was the most beautiful, and the king loved her most of all. One day, she went into the forest and " +
    "sat down beside a cool well.",
  "Dear Sir or Madam,\n\nI am writing to inquire about the position advertised on your website. I have " +
    "five years of experience in software engineering.\n\nYours faithfully,\nJ. Smith",
  "Q: What is the capital of France?\nA: Paris.\nQ: And of Germany?\nA: Berlin.",
  "The mitochondria is the powerhouse of the cell. It produces ATP through oxidative phosphorylation, " +
    "a process that involves the electron transport chain and chemiosmosis.",
  "Step 1: Preheat the oven to 180 degrees.\nStep 2: Mix 200g flour, 100g sugar and 2 eggs.\nStep 3: Bake for 25-30 minutes.",
];
add("english", ...englishParagraphs);
const words = (
  "the of and to in is you that it he was for on are as with his they at be this have from or one had by " +
  "word but not what all were we when your can said there use an each which she do how their if will up " +
  "other about out many then them these so some her would make like him into time has look two more write " +
  "go see number no way could people my than first water been call who oil its now find long down day did " +
  "get come made may part tokenizer server model inference latency throughput request response stream"
).split(" ");
for (let i = 0; i < 36; i++) {
  const n = R.int(3, 40);
  let s = "";
  for (let j = 0; j < n; j++) {
    let w = R.pick(words);
    if (j === 0 || R() < 0.05) w = w[0].toUpperCase() + w.slice(1);
    s += (j ? " " : "") + w;
    if (R() < 0.08) s += R.pick([",", ";", ":", " -", "'s", "'t", "'re"]);
  }
  s += R.pick([".", "!", "?", "...", "", "\n"]);
  add("english", s);
}

// ---------------------------------------------------------------------------------------------
// Source code.
add(
  "code",
  "def f(x):\n    return x + 1\n",
  "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n\nprint([fib(i) for i in range(10)])\n",
  "class Foo(Base):\n    \"\"\"Docstring.\"\"\"\n\n    def __init__(self, a: int, b: str = 'x') -> None:\n        super().__init__()\n        self._a = a\n        self.b = b\n\n    @property\n    def a(self):\n        return self._a\n",
  "import numpy as np\nimport torch.nn.functional as F\n\nx = np.zeros((3, 4), dtype=np.float32)\ny = F.softmax(torch.tensor(x), dim=-1)\n",
  "for i in range(10):\n\tif i % 2 == 0:\n\t\tprint(i)\n\telse:\n\t\tcontinue\n",
  "if __name__ == \"__main__\":\n    main()\n",
  "    # indented comment\n    x = {'a': 1, \"b\": [1, 2, 3]}\n",
  "lambda x, *args, **kwargs: (x, args, kwargs)",
  "async def handler(request):\n    async with session.get(url) as resp:\n        return await resp.json()\n",
  "#include <cstdio>\n#include <vector>\n\nint main(int argc, char** argv) {\n  std::vector<int> v{1, 2, 3};\n  for (auto& x : v) x *= 2;\n  printf(\"%d\\n\", v[0]);\n  return 0;\n}\n",
  "template <typename T, std::size_t N>\nconstexpr auto sum(const std::array<T, N>& a) -> T {\n\tT s{};\n\tfor (const auto& x : a) s += x;\n\treturn s;\n}\n",
  "namespace dserve::engine {\nclass Scheduler final {\n public:\n  explicit Scheduler(int budget) : budget_(budget) {}\n  [[nodiscard]] int budget() const noexcept { return budget_; }\n\n private:\n  int budget_ = 0;\n};\n}  // namespace dserve::engine\n",
  "auto p = std::make_unique<Foo>(); p->bar(); a <<= 2; b >>= 3; c = a <=> b; d = x ? y : z;",
  "#define MAX(a, b) ((a) > (b) ? (a) : (b))\n#ifdef __CUDA_ARCH__\n__global__ void k(float* __restrict__ o) { o[threadIdx.x] = 0.f; }\n#endif\n",
  "const f = async (x) => {\n  const { a, b = 2, ...rest } = await fetch(`/api/${x}?q=1`).then((r) => r.json());\n  return a ?? b;\n};\n",
  "function foo() {\n\treturn [1, 2, 3].map(x => x * 2).filter(Boolean);\n}\nexport default foo;\n",
  "let re = /^\\s*(\\d+)\\s*$/gu; if (a === b && c !== d || !e) { console.log('x'); }",
  "<div class=\"container\">\n  <p id='x'>Hello &amp; welcome</p>\n  <!-- comment -->\n</div>\n",
  "#!/usr/bin/env bash\nset -euo pipefail\nfor f in *.txt; do\n  echo \"$f\" | tr '[:lower:]' '[:upper:]' > \"${f%.txt}.out\"\ndone\n",
  "cd /work/main && cmake -S . -B build -G Ninja && ninja -C build 2>&1 | tail -n 20",
  "ls -la | grep -v '^d' | awk '{print $5, $9}' | sort -n\n",
  "if [ -z \"${VAR:-}\" ]; then\n\texport VAR=$(date +%s)\nfi\n",
  "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n}\n",
  "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfmt.Println(\"hello\")\n}\n",
  "SELECT id, name FROM users WHERE age >= 18 AND name LIKE 'A%' ORDER BY id DESC LIMIT 10;",
  "public static void main(String[] args) {\n        System.out.println(\"Hello, World!\");\n    }",
  "x=1;y=2;z=x+y;print(z)",
  "a[i][j] += b[j][k] * c[k][i];",
  "{{ message['role'] }}{% if loop.last %}<eos>{% endif %}",
  "\t\t\treturn nullptr;\n",
  "    \n    \n",
  "// TODO(someone): fix this\n/* block\n * comment\n */\n",
  "0x7fff'ffff 0b1010 1'000'000 3.14f 1e-9 1.0e+10 .5 5. 0o17",
);

// ---------------------------------------------------------------------------------------------
// JSON.
add(
  "json",
  "{}",
  "[]",
  "{\"a\":1}",
  "{\"name\": \"dserve\", \"version\": \"0.1.0\", \"private\": true}",
  "{\n  \"model\": \"deepseek-v3\",\n  \"messages\": [\n    {\"role\": \"user\", \"content\": \"Hi\"}\n  ],\n  \"temperature\": 0.7,\n  \"max_tokens\": 256\n}",
  "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20]",
  "{\"nested\":{\"deeper\":{\"deepest\":[null,true,false,-1.5e-3,\"\\u00e9\\n\"]}}}",
  "{\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}]}",
  "{\"emoji\": \"😀\", \"cjk\": \"中文\", \"escaped\": \"\\ud83d\\ude00\"}",
  "\t{\n\t\t\"tabs\": \"inside\"\n\t}",
  "{\"key with spaces\": \"value\", \"\": \"\", \"k\": [ ], \"o\": { }}",
  "[{\"id\":1,\"score\":0.98},{\"id\":2,\"score\":0.02}]",
);

// ---------------------------------------------------------------------------------------------
// Markdown.
add(
  "markdown",
  "# Title\n\n## Subtitle\n\nSome *emphasis*, **strong**, `code` and ~~strike~~.\n",
  "- item one\n- item two\n  - nested item\n1. first\n2. second\n",
  "```python\nprint('hi')\n```\n",
  "```\nplain fence\n```",
  "> quoted line\n> another\n\n---\n",
  "| col1 | col2 |\n|------|-----:|\n| a    | 1    |\n| b    | 22   |\n",
  "[link](https://example.com) and ![image](./img.png \"title\")",
  "Text with a footnote[^1].\n\n[^1]: The footnote.",
  "***bold italic*** __underline__ _italic_",
  "- [ ] todo\n- [x] done",
  "$$E = mc^2$$ and inline $\\alpha + \\beta$",
  "<details><summary>More</summary>\n\nHidden\n</details>",
);

// ---------------------------------------------------------------------------------------------
// CJK (the pre-tokenizer's second split covers U+4E00..U+9FA5, U+3040..U+309F, U+30A0..U+30FF only:
// edges and characters just outside those ranges are included on purpose).
add(
  "cjk",
  "你好，世界！",
  "我爱自然语言处理。",
  "深度求索是一家人工智能公司，致力于研究通用人工智能。",
  "今天天气很好，我们去公园散步吧。",
  "这是一个测试：包含标点符号、数字123和English单词。",
  "中华人民共和国成立于1949年10月1日。",
  "《红楼梦》是中国古典小说的巅峰之作。",
  "「引号」『双引号』（括号）【方括号】",
  "繁體中文測試：臺灣、香港、澳門。",
  "一二三四五六七八九十百千万亿",
  "日本語のテキストです。",
  "こんにちは、世界！",
  "東京都渋谷区で会議があります。",
  "ひらがなだけのぶんしょう",
  "カタカナダケノブンショウ",
  "コンピューターとインターネット",
  "私はプログラマーです。毎日コードを書いています。",
  "ｱｲｳｴｵ ﾊﾝｶｸｶﾀｶﾅ",
  "々〆〇ヶ",
  "안녕하세요, 세계!",
  "한국어 텍스트입니다. 형태소 분석은 어렵습니다.",
  "대한민국의 수도는 서울입니다.",
  "ㄱㄴㄷㄹ ㅏㅑㅓㅕ",
  "中文English混合日本語한국어",
  "　全角スペース　",
  "ＡＢＣ１２３！？",
  cp(0x4e00) + cp(0x9fa5) + cp(0x9fa6) + cp(0x9fff), // range edges and just past
  cp(0x3040, 0x3041, 0x309f, 0x30a0, 0x30ff, 0x3100),
  cp(0x20000, 0x20001, 0x2a6d6), // CJK Extension B
  cp(0x3400, 0x4dbf), // Extension A
  cp(0xf900, 0xfa6d), // compatibility ideographs
  "龘靐齉齾",
  "𠮷野家",
  "中 文 之 间 有 空 格",
  "中文\n换行\n\n再换行",
  "中文\t制表符",
  "数字１２３４５６７８９０",
  "第3章第12节",
);
{
  const hanzi = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又力定见只主没公从";
  for (let i = 0; i < 12; i++) {
    let s = "";
    const n = R.int(2, 80);
    for (let j = 0; j < n; j++) {
      s += R.pick([...hanzi]);
      if (R() < 0.1) s += R.pick(["，", "。", "、", "！", "？", " ", "1", "A"]);
    }
    add("cjk", s);
  }
}

// ---------------------------------------------------------------------------------------------
// RTL scripts.
add(
  "rtl",
  "مرحبا بالعالم",
  "اللغة العربية جميلة جداً.",
  "السلام عليكم ورحمة الله وبركاته",
  "بِسْمِ اللَّهِ الرَّحْمَٰنِ الرَّحِيمِ",
  "الرقم ١٢٣٤٥ والرقم 12345",
  "شالوم עולם",
  "שלום עולם",
  "עִבְרִית עם ניקוד",
  "הטקסט הזה בעברית, with English inside, ובחזרה לעברית.",
  "\u202bRTL embedding\u202c and \u200fRLM\u200e LRM",
  "فارسی: سلام دنیا",
  "اردو: ہیلو دنیا",
);

// ---------------------------------------------------------------------------------------------
// Other scripts.
add(
  "indic_thai",
  "नमस्ते दुनिया",
  "हिन्दी भाषा भारत में बोली जाती है।",
  "संस्कृतम् क्षत्रिय ज्ञान",
  "देवनागरी अंक: ०१२३४५६७८९",
  "বাংলা ভাষা",
  "தமிழ் மொழி",
  "తెలుగు",
  "ਪੰਜਾਬੀ",
  "සිංහල",
  "สวัสดีชาวโลก",
  "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
  "ตัวเลขไทย ๐๑๒๓๔๕",
  "ພາສາລາວ",
  "ភាសាខ្មែរ",
  "မြန်မာဘာသာ",
  "ქართული ენა",
  "Հայերեն",
  "አማርኛ",
);
add(
  "cyrillic_greek",
  "Привет, мир!",
  "Съешь же ещё этих мягких французских булок, да выпей чаю.",
  "Москва — столица России.",
  "Україна, Київ, ґанок, їжак, є",
  "Беларусь: ў",
  "Српски: ђ ћ џ љ њ",
  "ПРОПИСНЫЕ БУКВЫ",
  "Γειά σου Κόσμε",
  "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
  "αβγδεζηθικλμνξοπρστυφχψω ΑΒΓΔ",
  "ΐ ΰ ώ ϊ ϋ",
  "E = mc², ∑ᵢ xᵢ, π ≈ 3.14159, Ω",
);

// ---------------------------------------------------------------------------------------------
// Emoji.
add(
  "emoji",
  "😀",
  "😀😃😄😁😆😅😂🤣",
  "I ❤️ NY",
  "❤",
  "❤️",
  "👍🏻👍🏼👍🏽👍🏾👍🏿",
  "👨‍👩‍👧‍👦",
  "👩‍💻 and 👨🏽‍🚀",
  "🏳️‍🌈 🏳️‍⚧️",
  "🇺🇸🇬🇧🇨🇳🇯🇵🇩🇪🇫🇷",
  "🇺",
  "🏴󠁧󠁢󠁳󠁣󠁴󠁿",
  "1️⃣ 2️⃣ #️⃣ *️⃣",
  "☺ ☺️ ✈ ✈️",
  "🧑‍🤝‍🧑",
  "🫠🫡🫶🪿",
  "Great job! 🎉🎉🎉",
  "emoji🙂inside🙂words",
  "  🚀  ",
  "😀\n😀",
  "©️ ®️ ™️",
  "👁️‍🗨️",
  "🤷‍♂️🤷‍♀️",
  "👋🏽 hello",
  "\u{1F600}\u{FE0F}\u{FE0E}",
  "👨\u200d",
  "\u200d👨",
  "🐱‍👤",
);
{
  const pool = [..."😀🎉🚀🔥✨👍💯🙏😂🤔❤️🇫🇷👩‍💻🏳️‍🌈👍🏿"];
  for (let i = 0; i < 8; i++) {
    let s = "";
    for (let j = R.int(1, 12); j > 0; j--) s += R.pick(pool) + (R() < 0.3 ? " " : "");
    add("emoji", s);
  }
}

// ---------------------------------------------------------------------------------------------
// Combining marks.
add(
  "combining",
  "e\u0301",
  "\u00e9 vs e\u0301",
  "cafe\u0301 cafe\u0301s",
  "n\u0303o",
  "a\u0300\u0301\u0302\u0303\u0304",
  "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319\u0324\u031e\u0349\u035a\u032f\u031e\u0320\u034dA\u036b\u0357\u0334\u0362\u0335\u031c\u0330\u0354L\u0368\u0367\u0369\u0358\u0320G\u0311\u0357\u030e\u0305\u035b\u0341\u0334\u033b\u0348\u034d\u0354\u0339O\u0342\u030c\u030c\u0358\u0328\u0335\u0339\u033b\u031d\u0333",
  "\u0301",
  " \u0301",
  "\u0301\u0301\u0301",
  "1\u0301",
  "\u1100\u1161\u11a8",
  "\u0915\u094d\u0937",
  "o\u0308 \u00f6",
  "\u212b \u00c5 A\u030a",
  "\ufb01 \ufb02 fi",
  "x\u20dd",
);

// ---------------------------------------------------------------------------------------------
// Digit runs (the pre-tokenizer splits \p{N} into groups of 1..3).
{
  const digitRuns = [];
  for (let len = 1; len <= 20; len++) {
    let s = "";
    for (let j = 0; j < len; j++) s += String(j === 0 ? R.int(1, 9) : R.int(0, 9));
    digitRuns.push(s);
  }
  add("digits", ...digitRuns);
  for (const s of digitRuns.filter((_, i) => i % 3 === 0)) add("digits", ` ${s} `, `x${s}y`);
  add(
    "digits",
    "0",
    "00",
    "000",
    "0000",
    "007",
    "1,234",
    "1,234,567",
    "1,234,567,890.12",
    "1 234 567",
    "1.234.567,89",
    "1_000_000",
    "3.14159265358979323846",
    "-42",
    "+1-555-867-5309",
    "(555) 123-4567",
    "192.168.0.1",
    "2024-01-31T23:59:59.999Z",
    "12:30:45",
    "1/2/2023",
    "v1.2.3-rc.4",
    "1e10 2E-5 6.02e23",
    "0xDEADBEEF",
    "100%",
    "$1,000.00",
    "１２３４５",
    "٠١٢٣٤٥٦٧٨٩",
    "۱۲۳",
    "²³¹ ½ ¼ ¾ Ⅻ ⅷ ① ⑩",
    "12345678901234567890123456789012345678901234567890",
    "1 2 3 4 5 6 7 8 9 10",
    "a1b22c333d4444e55555",
    "123abc",
    "abc123",
    "１2３",
    "9" .repeat(64),
  );
}

// ---------------------------------------------------------------------------------------------
// Whitespace runs.
{
  for (const n of [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 64]) add("whitespace", " ".repeat(n));
  for (const n of [1, 2, 3, 4, 8]) add("whitespace", "\t".repeat(n));
  add(
    "whitespace",
    " \t",
    "\t ",
    " \t \t ",
    "\t\t  \t",
    "  x",
    "x  ",
    "  x  ",
    "\tx\t",
    "a  b   c    d",
    "a \t b",
    "word \u00a0word",
    "\u00a0",
    "\u00a0\u00a0x",
    "\u3000x\u3000",
    "a\u2009b\u200ac\u2002d\u2003e",
    "a\u200bb",
    "\u200b",
    "\u202f\u205f",
    "\u1680",
    "a\u000bb\u000cc",
    "\u000b\u000c",
    "  \u00a0 \u00a0",
    "   hello world   ",
    "\t\tindented with tabs",
    "spaces then newline   \n",
    "x\u0085y",
    "\u0085",
    "a\u2028b\u2029c",
    "\u2028",
  );
}

// ---------------------------------------------------------------------------------------------
// Newline runs.
add(
  "newlines",
  "\n",
  "\n\n",
  "\n\n\n",
  "\n".repeat(10),
  "\r\n",
  "\r\n\r\n",
  "\r",
  "\r\r",
  "\n\r",
  "a\nb",
  "a\r\nb",
  "a\rb",
  "a\n\nb",
  "a\n\n\n\nb",
  "line1\r\nline2\r\n\r\nline4\r\n",
  "\nleading newline",
  "trailing newline\n",
  " \n",
  "\n ",
  " \n ",
  "  \n  \n  ",
  "\t\n\t",
  "x \n\n y",
  "end.\n\n\nStart",
  "a\n \nb",
  ".\n",
  "!\n\n",
  "::\r\n",
  "\n\t\tindented",
  "a\n\u00a0\nb",
);

// ---------------------------------------------------------------------------------------------
// Mixed scripts in one word.
add(
  "mixed_scripts",
  "naïve",
  "Straße",
  "helloМир",
  "abc中文def",
  "日本語English",
  "Привет123мир",
  "αβγabc",
  "x²+y²=z²",
  "ﬁnance",
  "İstanbul ıi",
  "Ǆ ǅ ǆ",
  "co\u00f6perate",
  "中文English中文",
  "한글abc한글",
  "カタカナabcひらがな漢字",
  "العربيةabc",
  "hello世界123!",
  "Σίσυφος",
  "ﾃｽﾄtest",
  "résumé",
  "e-mail vs email vs E-Mail",
);

// ---------------------------------------------------------------------------------------------
// Punctuation runs.
add(
  "punctuation",
  ".",
  "...",
  "……",
  "!!!",
  "?!?!",
  "--",
  "---",
  "—",
  "–",
  "“quoted”",
  "‘single’",
  "«guillemets» ‹single›",
  "„German“",
  "''",
  "\"\"",
  "```",
  "<<<>>>",
  "->",
  "=>",
  "::",
  "!==",
  "#!",
  "@user",
  "$$$",
  "%%",
  "^_^",
  "(*_*)",
  "¯\\_(ツ)_/¯",
  "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
  "'s 't 're 've 'm 'll 'd",
  "'S 'T 'RE",
  "a.b.c",
  "...and then",
  "end...",
  " ,",
  " .",
  "hello ,world",
  "。，、；：？！",
  "¿Qué? ¡Sí!",
  "†‡•‣※",
  "→←↑↓⇒⇔",
  "∀x∈ℝ: x²≥0",
  "™©®",
  "€£¥₹₽",
  "■□▲△●○",
  "!a",
  "(hello)",
  "[x]",
  "{y}",
  "<tag>",
  "</tag>",
  "'quote'",
  "#hashtag",
  "?query",
  ",comma",
  "!",
  "?",
);

// ---------------------------------------------------------------------------------------------
// URLs, emails, paths.
add(
  "urls",
  "https://www.example.com/path/to/page?query=1&other=two#fragment",
  "http://localhost:8080/v1/chat/completions",
  "ftp://user:pass@host.example.org:21/file.tar.gz",
  "www.example.com",
  "https://example.com/%E4%B8%AD%E6%96%87",
  "https://中文.example/路径",
  "mailto:someone@example.com",
  "someone@example.com",
  "first.last+tag@sub.domain.co.uk",
  "Contact us at support@example.com or visit https://example.com.",
  "/usr/local/bin/python3",
  "C:\\Users\\Name\\Documents\\file.txt",
  "~/.cache/dserve/tokenizers/deepseek-v3/tokenizer.json",
  "git@github.com:org/repo.git",
  "s3://bucket/key/with/slashes/",
  "<https://example.com>",
  "[a](http://a.b/c_(d))",
  "data:text/plain;base64,SGVsbG8sIFdvcmxkIQ==",
  "192.168.1.1:443",
  "@mention #channel $TICKER",
);

// ---------------------------------------------------------------------------------------------
// Added / special tokens inside text (all taken from tokenizer.json's added_tokens).
{
  const { tokenizerJSON } = readTokenizerFiles();
  const added = tokenizerJSON.added_tokens.map((t) => t.content);
  const named = added.filter((s) => !s.includes("place▁holder"));
  const placeholders = added.filter((s) => s.includes("place▁holder"));
  if (named.length !== 18 || placeholders.length !== 800) {
    throw new Error(`unexpected added_tokens: ${named.length} named, ${placeholders.length} placeholders`);
  }
  const [BOS, EOS, PAD] = named;
  const tok = (name) => {
    const t = named.find((s) => s === name);
    if (!t) throw new Error(`missing added token ${name}`);
    return t;
  };
  const USER = tok("<｜User｜>");
  const ASSISTANT = tok("<｜Assistant｜>");
  const EOT = tok("<|EOT|>");
  const TCB = tok("<｜tool▁calls▁begin｜>");
  const TCE = tok("<｜tool▁calls▁end｜>");
  const TC1 = tok("<｜tool▁call▁begin｜>");
  const TC2 = tok("<｜tool▁call▁end｜>");
  const SEP = tok("<｜tool▁sep｜>");
  const FB = tok("<｜fim▁begin｜>");
  const FH = tok("<｜fim▁hole｜>");
  const FE = tok("<｜fim▁end｜>");
  const OB = tok("<｜tool▁outputs▁begin｜>");
  const OE = tok("<｜tool▁outputs▁end｜>");
  const O1 = tok("<｜tool▁output▁begin｜>");
  const O2 = tok("<｜tool▁output▁end｜>");

  for (const t of named) add("special_tokens", t, `x${t}y`, ` ${t} `);
  add(
    "special_tokens",
    placeholders[0],
    placeholders[1],
    placeholders[799],
    `a${placeholders[42]}b`,
    BOS + EOS,
    BOS + BOS,
    `${BOS}Hello${EOS}`,
    `${BOS}${USER}Hello, who are you?${ASSISTANT}I am DeepSeek.${EOS}`,
    `${BOS}You are a helpful assistant.${USER}What is 2+2?${ASSISTANT}<think>\nSimple arithmetic.\n</think>\n\n2+2=4${EOS}`,
    `${USER}\n${ASSISTANT}\n`,
    `${USER} ${ASSISTANT} `,
    `  ${USER}  `,
    `\n\n${BOS}\n\n`,
    `${TCB}${TC1}function${SEP}get_weather\n\`\`\`json\n{"city": "Paris"}\n\`\`\`${TC2}${TCE}`,
    `${OB}${O1}{"temp": 21}${O2}${OE}`,
    `${FB}def add(a, b):\n    ${FH}\n    return c${FE}`,
    `${FB}${FH}${FE}`,
    `${EOT}${EOT}`,
    `text${EOT}text`,
    `${PAD}${PAD}${PAD}`,
    "<think>",
    "</think>",
    "<think></think>",
    "<think>\nreasoning\n</think>\n\nanswer",
    " <think> ",
    `${ASSISTANT}<think>\n`,
    `中文${USER}日本語${ASSISTANT}한국어`,
    `😀${USER}😀`,
    `123${BOS}456`,
    // partial / near-miss forms: none of these is an added token
    "<｜User",
    "｜User｜>",
    "<｜User｜",
    "<|User|>",
    "<｜user｜>",
    "<｜USER｜>",
    "<｜ User ｜>",
    "<｜begin_of_sentence｜>",
    "<｜begin▁of▁sentence|>",
    "<|begin▁of▁sentence｜>",
    "<｜begin▁of▁sentence",
    "begin▁of▁sentence",
    "▁",
    "｜",
    "<｜>",
    "<｜｜>",
    `<${USER}>`,
    `<<｜User｜>>`,
    `<｜User｜｜>`,
    `<｜${USER}`,
    `${USER.slice(0, -1)}${USER}`,
    "<｜place▁holder▁no▁800｜>",
    "<｜place▁holder▁no▁-1｜>",
    "<｜place▁holder▁no▁01｜>",
    "<|EOT|",
    "<|eot|>",
    "<|EOT|>>",
    "<<|EOT|>",
    "<|endoftext|>",
    "<s></s>",
    "<｜tool▁call▁begin",
    "<｜tool▁calls▁begin｜>x<｜tool▁calls▁begin",
    `${USER}${USER}${USER}${ASSISTANT}${ASSISTANT}`,
  );
  // random mixes of text and added tokens
  const fillers = ["", " ", "  ", "\n", "hi", "Hello world", "中文", "123", "😀", "\t", "<", ">", "｜", "<｜", "｜>", "▁"];
  for (let i = 0; i < 20; i++) {
    let s = "";
    for (let j = R.int(1, 8); j > 0; j--) {
      s += R.pick(fillers);
      s += R() < 0.2 ? R.pick(placeholders) : R.pick(named);
    }
    s += R.pick(fillers);
    add("special_tokens", s);
  }
}

// ---------------------------------------------------------------------------------------------
// "Invalid-looking" input: replacement char, noncharacters, private use, BOM, controls, NUL.
// (Lone surrogates are not representable in valid UTF-8 and are left out.)
add(
  "unusual_codepoints",
  "\ufffd",
  "a\ufffdb",
  "\ufffd\ufffd\ufffd",
  "\uffff",
  "\ufffe",
  "x\uffffy",
  "\ufdd0\ufdef",
  cp(0x1fffe, 0x1ffff),
  cp(0x10fffe, 0x10ffff),
  "\ue000",
  "\uf8ff",
  "a\ue000b\uf8ffc",
  cp(0xf0000, 0x100000, 0x10fffd),
  "\ufeff",
  "\ufeffHello",
  "Hello\ufeffworld",
  "\ufeff\ufeff",
  " \ufeff ",
  "\u0000",
  "a\u0000b",
  "\u0000\u0000\u0000",
  "\u0001\u0002\u0003\u0004\u0005\u0006\u0007\u0008",
  "\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f",
  "\u001b[31mred\u001b[0m",
  "\u007f",
  "a\u007fb",
  "\u0080\u0081\u009f",
  "bell\u0007",
  "back\bspace",
  "\u00ad soft\u00adhyphen",
  "\u200c\u200d",
  "\u2060\u2061\u2062\u2063\u2064",
  "\u206a\u206f",
  "\ufff9\ufffa\ufffb",
  "\ufffc",
  cp(0xe0001, 0xe0041, 0xe007f),
  "\ufe00\ufe0f",
  cp(0xe0100, 0xe01ef),
  "\u034f",
  "\u180e",
  cp(0x1d400, 0x1d7ff),
  cp(0x10000),
  "\u0600\u06dd",
);

// ---------------------------------------------------------------------------------------------
// Probes for places where regex engines differ: JavaScript's \s includes U+FEFF but not U+0085
// (NEL); Oniguruma's (HF tokenizers) \s is Unicode White_Space (U+0085 yes, U+FEFF no);
// U+180E, U+200B and U+2060 are whitespace in neither. Characters newer than some engines'
// Unicode tables (15.0: Kawi U+11F00.., CJK Ext H U+31350..; 15.1: CJK Ext I U+2EBF0..) are
// letters or unassigned depending on the engine's Unicode version.
{
  const odd = ["\ufeff", "\u0085", "\u180e", "\u200b", "\u2060", "\u2028", "\u00a0", "\u3000", "\u000b", "\u000c"];
  const ctx = ["", " ", "  ", "\n", "\r\n", "x", "1", "!", "中", "\t"];
  for (const o of odd) {
    add("regex_probes", `${o}${o}`, `a${o} b`, `a ${o}b`, ` ${o}\n`, `${o}\n\n`, `x${o}${o} y`, `1${o}2`, `!${o}!`);
  }
  for (let i = 0; i < 20; i++) {
    let s = "";
    for (let j = R.int(2, 6); j > 0; j--) s += R.pick(ctx) + R.pick(odd);
    add("regex_probes", s + R.pick(ctx));
  }
  add(
    "regex_probes",
    cp(0x11f00, 0x11f04, 0x11f41), // Kawi (Unicode 15.0)
    cp(0x31350, 0x31351) + "x", // CJK Extension H (15.0)
    cp(0x2ebf0, 0x2ebf1) + " y", // CJK Extension I (15.1)
    cp(0x1e4d0, 0x1e4e8), // Nag Mundari (15.0)
    cp(0x10d40, 0x10d50), // Garay (16.0)
    "a" + cp(0x1e030) + "b", // modifier letter (15.0)
    "1" + cp(0x1e4f0) + "2", // Nag Mundari digit (15.0)
    "\u0378\u0379", // unassigned
    "x" + cp(0x0ecf) + "y", // Lao tone mark (15.0, Mn)
    " " + cp(0x1acf) + "1", // combining mark new in Unicode 17.0
    " " + cp(0x1e6c0) + "1", // letter new in Unicode 17.0
    " " + cp(0x20c1) + "1", // currency sign new in Unicode 17.0
  );
}

// ---------------------------------------------------------------------------------------------
// Very long words / runs.
{
  const letters = "abcdefghijklmnopqrstuvwxyz";
  let randomWord = "";
  for (let i = 0; i < 3000; i++) randomWord += R.pick([...letters]);
  let b64 = "";
  const b64chars = letters + letters.toUpperCase() + "0123456789+/";
  for (let i = 0; i < 2048; i++) b64 += R.pick([...b64chars]);
  let hex = "";
  for (let i = 0; i < 512; i++) hex += R.pick([..."0123456789abcdef"]);
  add(
    "long",
    "a".repeat(1000),
    "ab".repeat(500),
    "abc".repeat(400),
    randomWord,
    "Supercalifragilisticexpialidocious".repeat(20),
    "pneumonoultramicroscopicsilicovolcanoconiosis",
    "Donaudampfschifffahrtselektrizitätenhauptbetriebswerkbauunterbeamtengesellschaft",
    b64,
    hex,
    "中".repeat(500),
    "の".repeat(300),
    "한".repeat(300),
    "1".repeat(200),
    "9876543210".repeat(30),
    " ".repeat(500),
    "\n".repeat(300),
    "\t".repeat(200),
    "😀".repeat(200),
    "👨‍👩‍👧‍👦".repeat(50),
    "e\u0301".repeat(200),
    "!".repeat(300),
    "-".repeat(200),
    "=".repeat(120),
    "_".repeat(100),
    "#".repeat(80),
    "/".repeat(64),
    ".".repeat(256),
    "ab cd ".repeat(300),
    "http://" + "a".repeat(1000) + ".com",
    "x".repeat(255),
    "x".repeat(256),
    "x".repeat(257),
  );
}

// ---------------------------------------------------------------------------------------------
// Empty string and single characters.
add("empty", "");
{
  const singles = [];
  for (let c = 0; c < 128; c++) singles.push(String.fromCharCode(c));
  for (const c of [
    0x80, 0xa0, 0xa9, 0xe9, 0xff, 0x100, 0x2c6, 0x391, 0x410, 0x5d0, 0x627, 0x905, 0xe01, 0x1100, 0x2019,
    0x20ac, 0x2581, 0x3000, 0x3042, 0x30a2, 0x4e00, 0x9fa5, 0xac00, 0xff5c, 0xff01, 0x1f600, 0x1f1fa,
    0x10ffff,
  ]) {
    singles.push(cp(c));
  }
  add("single_char", ...singles);
}

// ---------------------------------------------------------------------------------------------
// Random mixtures of everything above (a deterministic fuzz set).
{
  const pool = [];
  for (const [name, strings] of categories) {
    if (name === "long") continue;
    for (const s of strings) pool.push(s);
  }
  for (let i = 0; i < 80; i++) {
    let s = "";
    for (let j = R.int(2, 6); j > 0; j--) {
      let piece = R.pick(pool);
      if (piece.length > 60) {
        const a = R.int(0, piece.length - 1);
        piece = piece.slice(a, a + R.int(1, 60));
        // never cut a surrogate pair in half
        if (/^[\udc00-\udfff]/.test(piece)) piece = piece.slice(1);
        if (/[\ud800-\udbff]$/.test(piece)) piece = piece.slice(0, -1);
      }
      s += piece + R.pick(["", "", " ", "\n", "\t", "  "]);
    }
    add("random_mix", s);
  }
}

// ---------------------------------------------------------------------------------------------
// Dedupe (keep first occurrence), check well-formedness, write.
const seen = new Set();
const lines = [];
const counts = [];
for (const [name, strings] of categories) {
  let kept = 0;
  for (const s of strings) {
    if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s)) {
      throw new Error(`lone surrogate in ${name}: ${JSON.stringify(s)}`);
    }
    if (seen.has(s)) continue;
    seen.add(s);
    lines.push(jsonLine(s));
    kept++;
  }
  counts.push([name, kept]);
}
fs.writeFileSync(out, lines.join("\n") + "\n");
for (const [name, n] of counts) process.stderr.write(`${name.padEnd(20)} ${n}\n`);
process.stderr.write(`${"total".padEnd(20)} ${lines.length} -> ${out}\n`);
