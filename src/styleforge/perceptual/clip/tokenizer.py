"""CLIP's byte-pair-encoding tokenizer (the ids of open_clip's ``SimpleTokenizer`` and of OpenAI's ``clip.tokenize``).

Steps, as the original does them:

1. clean: ``ftfy.fix_text`` when ftfy is installed (else Unicode NFC plus straight quotes, the fixes that matter for
   typed prompts), ``html.unescape`` twice, strip, every whitespace run to one space, lower case;
2. split into words: the special tokens, the contractions ``'s 't 're 've 'm 'll 'd``, runs of letters (Unicode
   category L*), single digits (N*: ``1984`` is four words), runs of anything else but whitespace;
3. each word's UTF-8 bytes to printable characters (GPT-2's byte table), the last one marked end-of-word
   (``</w>``), then merged pair by pair, lowest merge rank first;
4. ``[start] + ids + [end]`` right-padded with 0 to the context length (77). Longer sequences are cut to the
   context length with end-of-text as the last id (open_clip's rule; OpenAI's ``truncate=True``), and
   :meth:`Tokenizer.__call__` warns, naming the first word that was dropped.

The merges (``bpe_simple_vocab_16e6.txt.gz``, MIT licence: ``VOCAB-LICENSE.txt``) ship next to this module, so
the tokenizer works offline with nothing else installed. The python ``regex`` module is not needed: step 2 is a
small scanner over ``unicodedata`` categories, which is what the ``\\p{L}``/``\\p{N}`` classes test.
"""

from __future__ import annotations

import functools
import gzip
import html
import unicodedata
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch

from ...errors import StyleforgeError, StyleforgeWarning

__all__ = ["Tokenizer", "VOCAB_FILE", "SOT", "EOT", "clean_text"]

VOCAB_FILE = Path(__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = 49406, 49407
_SPECIAL = ("<start_of_text>", "<end_of_text>")
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
_QUOTES = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
           "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"'}


def _byte_table() -> Dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable characters, in its order (the printable bytes
    first, as themselves; then the others, as chr(256), chr(257), ...): the first 256 vocabulary entries."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    table = {b: chr(b) for b in keep}
    for extra, b in enumerate(b for b in range(256) if b not in table):
        table[b] = chr(256 + extra)
    return table


def _fix_text(text: str) -> str:
    try:
        import ftfy
    except ImportError:
        text = unicodedata.normalize("NFC", text)
        return "".join(_QUOTES.get(c, c) for c in text)
    return ftfy.fix_text(text)


def clean_text(text: str) -> str:
    """Step 1: fix, unescape HTML twice, strip, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(_fix_text(text))).strip()
    return " ".join(text.split()).lower()


def _kind(c: str) -> str:
    cat = unicodedata.category(c)
    if cat[0] == "L":
        return "L"
    if cat[0] == "N":
        return "N"
    return "S" if c.isspace() else "P"


def split_words(text: str) -> List[str]:
    """Step 2 on cleaned text: the words in order (whitespace dropped)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        special = next((s for s in _SPECIAL if text.startswith(s, i)), None)
        if special:
            out.append(special)
            i += len(special)
            continue
        contraction = next((s for s in _CONTRACTIONS if text.startswith(s, i)), None) if c == "'" else None
        if contraction:
            out.append(contraction)
            i += len(contraction)
            continue
        kind = _kind(c)
        if kind == "S":
            i += 1
            continue
        if kind == "N":
            out.append(c)
            i += 1
            continue
        j = i + 1
        while j < n and _kind(text[j]) == kind:
            j += 1
        out.append(text[i:j])
        i = j
    return out


class Tokenizer:
    """``tok(prompts) -> ids [N, context_length]`` (int64); ``tok.encode(text)`` -> the BPE ids without start/end."""

    def __init__(self, vocab_file: Union[str, Path] = VOCAB_FILE, context_length: int = 77):
        self.context_length = int(context_length)
        with gzip.open(vocab_file, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1: 49152 - 256 - 2 + 1]]
        self.byte_table = _byte_table()
        vocab = list(self.byte_table.values())
        vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + list(_SPECIAL)
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.ranks = {m: i for i, m in enumerate(merges)}
        self.sot, self.eot = self.encoder[_SPECIAL[0]], self.encoder[_SPECIAL[1]]
        self._bpe = functools.lru_cache(maxsize=65536)(self._bpe_uncached)

    def _bpe_uncached(self, word: str) -> Tuple[str, ...]:
        if word in _SPECIAL:
            return (word,)
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pairs = [(self.ranks.get((a, b), float("inf")), k) for k, (a, b) in enumerate(zip(parts, parts[1:]))]
            best = min(pairs)[0]
            if best == float("inf"):
                break
            first, second = next((a, b) for a, b in zip(parts, parts[1:]) if self.ranks.get((a, b)) == best)
            merged, k = [], 0
            while k < len(parts):
                if k + 1 < len(parts) and parts[k] == first and parts[k + 1] == second:
                    merged.append(first + second)
                    k += 2
                else:
                    merged.append(parts[k])
                    k += 1
            parts = merged
        return tuple(parts)

    def encode_words(self, text: str) -> List[Tuple[str, List[int]]]:
        """(word, its BPE ids) for every word of ``text``."""
        out = []
        for word in split_words(clean_text(text)):
            chars = "".join(self.byte_table[b] for b in word.encode("utf-8"))
            out.append((word, [self.encoder[p] for p in self._bpe(chars)]))
        return out

    def encode(self, text: str) -> List[int]:
        return [i for _, ids in self.encode_words(text) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of BPE ids (start, end and padding left out), words separated by single spaces."""
        inv = {v: k for k, v in self.byte_table.items()}
        out = bytearray()
        for i in ids:
            if int(i) in (0, self.sot, self.eot):
                continue
            tok = self.decoder[int(i)]
            end = tok.endswith("</w>")
            out.extend(inv[c] for c in (tok[:-4] if end else tok))
            if end:
                out.extend(b" ")
        return out.decode("utf-8", errors="replace").strip()

    def tokenize(self, text: str) -> Tuple[List[int], Optional[str]]:
        """The ids of one prompt, padded to the context length, and None or (when cut) a note saying where."""
        words = self.encode_words(text)
        ids = [self.sot] + [i for _, w in words for i in w] + [self.eot]
        note = None
        limit = self.context_length
        if len(ids) > limit:
            kept = limit - 2  # BPE ids that fit between start and end
            count, first_dropped, kept_words = 0, None, 0
            for word, w in words:
                if count + len(w) > kept:
                    first_dropped = word
                    break
                count += len(w)
                kept_words += 1
            note = (f"the prompt is {len(ids) - 2} tokens long, CLIP reads {kept}: it was cut after word "
                    f"{kept_words} of {len(words)}, from {first_dropped!r} on")
            ids = ids[:limit]
            ids[-1] = self.eot
        return ids + [0] * (limit - len(ids)), note

    def __call__(self, prompts: Union[str, Sequence[str]], warn: bool = True) -> torch.Tensor:
        """Token ids [N, context_length] of ``prompts``; an empty prompt is an error, a prompt longer than the
        context a warning (``warn``) naming where it was cut."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        rows = []
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise StyleforgeError("is empty; describe the image in words, e.g. \"a smiling face\"",
                                      param="prompt", value=repr(p) if not isinstance(p, str) else repr(p))
            ids, note = self.tokenize(p)
            if note and warn:
                warnings.warn(StyleforgeWarning(f"{note}", param="prompt", label="the prompt"), stacklevel=2)
            rows.append(ids)
        return torch.tensor(rows, dtype=torch.int64)
