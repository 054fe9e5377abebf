"""Stage 2a: referring phrases from a long caption, offline.

FG-CLIP took noun phrases from the caption with spaCy; spaCy's English model is not on PyPI, so
this is a small rule-based noun-phrase chunker over closed-class word lists (determiners,
prepositions, verbs, ...) and the attribute lexicons. A phrase is a determiner or attribute run
followed by content words, cut at function words, punctuation or a participle after the noun
("a man sitting ..." -> "a man"); "a pair of shoes"-style partitives keep their "of". Each phrase
comes with the caption sentence that carries it (the region's ``long_expr``).
"""

from __future__ import annotations

from dataclasses import dataclass

from fgclip_core.annotate.captions import split_sentences
from fgclip_core.annotate.config import PhraseConfig
from fgclip_core.annotate.lexicon import Lexicon, Token, load_lexicon
from fgclip_core.annotate.negatives import find_slots, normalise

ADJ_SUFFIXES = ("ed", "ing")
PARTITIVES = frozenset({"mix", "pair", "group", "bunch", "couple", "stack", "pile", "set", "row", "cluster", "slice",
                        "piece", "herd", "flock", "bowl", "cup", "glass", "plate", "box", "bottle", "jar",
                        "basket", "bag", "loaf", "sheet", "line", "bouquet", "crowd", "team"})


@dataclass(frozen=True)
class Phrase:
    text: str  # the referring expression (short_expr)
    sentence: str  # the caption sentence that carries it (long_expr)
    head: str


class RulePhraseExtractor:
    def __init__(self, cfg: PhraseConfig | None = None, lexicon: Lexicon | None = None):
        self.cfg = cfg or PhraseConfig()
        self.lex = lexicon or load_lexicon()

    def provenance(self) -> dict[str, str]:
        return {"backend": "rules", "model": "np-chunker", "prompt_version": "phrases-v1"}

    def _chunks(self, sentence: str) -> list[tuple[list[Token], str]]:
        lex = self.lex
        tokens, slots = find_slots(sentence, lex)
        attr_idx = {s.index for s in slots}
        chunks: list[tuple[list[Token], str]] = []
        cur: list[Token] = []
        head = ""

        def close() -> None:
            nonlocal cur, head
            h = head.lower()
            informative = len(cur) > 1 and (cur[0].low in lex.determiners or any(
                lex.attribute(t.low) or t.low in lex.modifier_words for t in cur[:-1]))
            if head and informative and h not in lex.non_objects and h not in lex.pronouns and not lex.attribute(h):
                chunks.append((cur, head))
            cur, head = [], ""

        for i, tok in enumerate(tokens):
            w = tok.low
            nxt = tokens[i + 1].low if i + 1 < len(tokens) else ""
            adjective_head = head.lower().endswith(ADJ_SUFFIXES)  # "a mottled grey ...", "a worn, wooden ..."
            if not tok.is_word:
                if tok.text in "-," and adjective_head and nxt and not lex.is_function_word(nxt):
                    continue
                close()
            elif w == "of" and head and head.lower() in PARTITIVES:
                cur.append(tok)
                head = ""
            elif w in lex.determiners and not (w == "that" and head):
                if head:
                    close()
                if w == "one" and nxt == "of":
                    close()
                    continue
                cur = [*cur, tok] if cur and not head else [tok]
            elif i in attr_idx or (w in lex.modifier_words and nxt and lex.attribute(nxt)):
                if head and not adjective_head:
                    close()
                cur.append(tok)
                head = ""
            elif w in lex.adverbs and not head:
                cur.append(tok)
            elif lex.is_function_word(w) or (head and not adjective_head and w.endswith(ADJ_SUFFIXES)):
                close()
            elif not cur and w.endswith(("ing", "ed")):
                continue  # a participle does not start a phrase ("... showing her body")
            else:
                cur.append(tok)
                head = tok.text
        close()
        return chunks

    def extract(self, caption: str) -> list[Phrase]:
        out: list[Phrase] = []
        seen: set[str] = set()
        for sentence in split_sentences(caption):
            for toks, head in self._chunks(sentence):
                # drop a leading adverb and anything after the head
                end = max(i for i, t in enumerate(toks) if t.text == head)
                toks = toks[: end + 1]
                if len([t for t in toks if t.is_word]) > self.cfg.max_words:
                    continue
                text = sentence[toks[0].start: toks[-1].end]
                if toks[0].low in self.lex.determiners or self.lex.attribute(toks[0].low):
                    text = text[:1].lower() + text[1:]
                key = normalise(text)
                if key in seen:
                    continue
                seen.add(key)
                out.append(Phrase(text, sentence, head))
                if len(out) == self.cfg.max_phrases:
                    return out
        return out
