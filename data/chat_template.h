// Chat templates: a conversation (DatasetRow::turns) becomes token ids and learned flags, rendered
// as the Hugging Face chat template of the model family renders it (apply_chat_template with
// tokenize=False, add_generation_prompt=False) and tokenized with the markers inserted by id.
//
// Formats (the Jinja templates they reproduce, and recognise, are listed in chat_template.cpp):
//   chatml  "<|im_start|>{role}\n{content}<|im_end|>\n" per turn, contents as given (Axolotl's
//           chatml). No system turn is added when the conversation has none: Qwen2's template,
//           which adds "You are a helpful assistant.", is a different template.
//   llama3  bos, then "<|start_header_id|>{role}<|end_header_id|>\n\n{content|trim}<|eot_id|>" per
//           turn (Meta-Llama-3-8B-Instruct).
//   llama2  "<s>[INST] {user|strip} [/INST] {assistant|strip} </s>" per exchange, an optional first
//           system turn folded into the first user turn as "<<SYS>>\n{system}\n<</SYS>>\n\n" before
//           the strip (Llama-2-chat); <s> and </s> are the tokenizer's bos and eos.
// trim and strip remove Python's white space (str.isspace) at both ends, as Jinja2 does.
//
// Tokenization: the markers (<|im_start|>, <|im_end|>, <|start_header_id|>, <|end_header_id|>,
// <|eot_id|>, bos, eos) are inserted by id; the text between two markers (template text and message
// contents together) is encoded as one string with encode_after_special(), as Hugging Face encodes
// the rendered text split at its special tokens, so the ids are HF's whenever the tokenizer's are.
// Differences that remain: text in a message that spells a special token stays text (the Tokenizer
// contract; HF turns it into the token), and a marker with lstrip/rstrip set does not absorb the
// white space beside it as HF's matching would. A marker the tokenizer lacks is a UserError
// naming the token, the tokenizer and the format; the built-in byte tokenizer (tiny test models)
// instead spells such a marker as its UTF-8 bytes (its "<s>" and "</s>" are bos and eos).
//
// Learned tokens (train_on_inputs false): each assistant turn's content and the marker that ends it
// (chatml <|im_end|>, not the "\n" after it; llama3 <|eot_id|>; llama2 the spaces around the answer
// and </s>). Where a token spans the start of a content (merging template text with it), it counts
// as the content's. Nothing else is added: a tokenizer's add_bos is ignored (HF does not add bos to
// a chat template, which spells its own), and no eos is appended; a chat sample ends where its
// template ends the last assistant turn, which every conversation must end with.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/dataset.h"
#include "tokenizer/tokenizer.h"

namespace ptrain {

enum class ChatFormat { kChatMl, kLlama3, kLlama2 };

// "chatml", "llama3", "llama2"; UserError listing the accepted names otherwise.
ChatFormat parse_chat_format(std::string_view name);
std::string chat_format_name(ChatFormat format);

// The format whose known Hugging Face template `jinja_template` is, compared with white space
// outside string literals, Jinja's "-" trim marks and comments ignored and string escapes decoded;
// nullopt for any other template.
std::optional<ChatFormat> detect_chat_format(std::string_view jinja_template);

// The format the config's chat_template value selects: one of the three names, or
// "tokenizer_default" for the format of the tokenizer's own chat_template (tokenizer_config.json).
// UserError listing the accepted names, or naming tokenizer_config.json when its template is absent
// or not one of the three.
ChatFormat resolve_chat_format(std::string_view name, const Tokenizer& tokenizer);

// One stretch of a rendered conversation.
struct ChatPiece {
  std::string text;           // as the template renders it; a marker's spelling for a marker
  std::optional<int64_t> id;  // set for a marker inserted by id
  bool learned = false;       // learned with train_on_inputs false
};

// `turns` in `format`. UserError starting with `where` ("chat.jsonl:4: ") when the conversation
// does not end with an assistant turn, or (llama2) when its roles do not alternate user/assistant
// after an optional first system turn, where HF's template raises or drops the turn.
std::vector<ChatPiece> render_chat(const std::vector<Turn>& turns, ChatFormat format,
                                   const Tokenizer& tokenizer, std::string_view where);

// The rendered text: what apply_chat_template(tokenize=False) returns.
std::string chat_text(const std::vector<ChatPiece>& pieces);

struct ChatTokens {
  std::vector<int64_t> ids;
  std::vector<bool> learned;  // per id
};

// Markers by id; each run of text between markers encoded as one string (encode_after_special()
// after a marker), a change of the learned flag inside it placed after the longest prefix of the
// run's ids that encoding the text before the change also gives.
ChatTokens tokenize_chat(const std::vector<ChatPiece>& pieces, const Tokenizer& tokenizer);

}  // namespace ptrain
