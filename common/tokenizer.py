"""A tokenizer-like rule for counting and producing tokens without a model's vocabulary.

Real BPE tokenizers split text into word pieces of about four characters, punctuation apart and
leading spaces attached. This rule does the same: a word of n letters is ceil(n / 4) tokens, each
punctuation mark one token, each digit group of up to three digits one token. It is exact for the
simulator (which generates with the same rule) and a close estimate for real models, which the
gateway uses only to reserve tokens before the worker reports the true count.
"""

from __future__ import annotations

import re

_PIECE = re.compile(r"\s*(?:[^\W\d_]+|\d{1,3}|[^\w\s]|_+)", re.UNICODE)
_WORD_PIECE_CHARS = 4


def count_tokens(text: str) -> int:
    """The number of tokens in `text` under this module's rule."""
    count = 0
    for match in _PIECE.finditer(text):
        piece = match.group().lstrip()
        if piece[:1].isalpha():
            count += -(-len(piece) // _WORD_PIECE_CHARS)
        else:
            count += 1
    return count


def count_chat_tokens(contents: list[str] | tuple[str, ...]) -> int:
    """Tokens for chat messages: their text plus four tokens of template per message."""
    return sum(count_tokens(c) + 4 for c in contents) + 2
