"""Pre-tokenised shards: every text of a sample stored as token ids next to its image and record.

A training sample carries ~50 texts (caption, short caption, per region ``short_expr``,
``long_expr`` and 10 hard negatives); tokenising them is ~0.3 ms per sample even behind the word
cache of ``data.tokens``. ``fgclip data build-shards --tokenizer DIR`` writes them once, as a
``{key}.tok.npy`` member per sample (a plain npy array, so plain ``webdataset`` reads the shards as
before), and records the tokenizer's ``fingerprint`` in ``manifest.json`` under ``tokens``.

Rows, in this order (``record_texts``): the caption (long length), ``short_caption_prefix +
short_caption`` (short length), then for every region ``short_expr``, ``long_expr`` (as stored,
even when empty) and each of ``short_expr_negs`` (short length). Each row is exactly the
tokenizer's fixed-length output with its trailing pad ids removed; re-padding with the pad id
gives the tokenizer's row back bit for bit. The array (uint16 when the vocabulary fits, else int32)
is ``[n_rows, crc_hi, crc_lo, len_0 .. len_{n-1}, ids ...]``, where the crc32 is over the sample's
``{key}.json`` bytes the rows were made from, so ids never go with a record they were not made from.

The fingerprint hashes the tokenizer's full ``tokenizers`` definition (vocabulary, merges,
normaliser, pre-tokeniser, post-processor, special tokens; not the padding/truncation state a
caller left on it), the pad id, the short caption prefix, both lengths and this format's version.
The loader uses the stored ids only when its own fingerprint is the manifest's; otherwise it
tokenises on the fly and says why, once, at WARNING.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

import numpy as np

from fgclip_core.data.records import FineHARDRecord

TOKENS_FORMAT = "fgclip-token-ids"
TOKENS_VERSION = 1
TOKENS_EXT = "tok.npy"
_HEADER = 3   # n_rows, crc_hi, crc_lo
Mode = Literal["long", "short"]


class TokensUnavailable(ValueError):
    """Stored ids cannot be used (no tokenizer definition, other fingerprint, damaged or stale member)."""


def record_texts(record: FineHARDRecord, prefix: str) -> list[tuple[str, Mode]]:
    """The texts of a record in row order, with the mode each is tokenised in."""
    out: list[tuple[str, Mode]] = [(record.caption, "long"), (prefix + record.short_caption, "short")]
    for r in record.bbox_info:
        out.append((r.short_expr, "short"))
        out.append((r.long_expr, "short"))
        out.extend((n, "short") for n in r.short_expr_negs)
    return out


def num_rows(record: FineHARDRecord) -> int:
    return 2 + sum(2 + len(r.short_expr_negs) for r in record.bbox_info)


def fingerprint(tokenizer: Any, prefix: str, long_length: int, short_length: int) -> str:
    """Hash of what decides the ids; raises ``TokensUnavailable`` for a tokenizer without a
    ``tokenizers`` definition (``tokenizer.hf.backend_tokenizer``)."""
    backend = getattr(getattr(tokenizer, "hf", None), "backend_tokenizer", None)
    if backend is None:
        raise TokensUnavailable(f"{type(tokenizer).__name__} has no `tokenizers` definition to fingerprint")
    definition = json.loads(backend.to_str())
    definition.pop("padding", None)      # call state, set by whoever encoded last
    definition.pop("truncation", None)
    h = hashlib.sha256()
    h.update(json.dumps({"format": TOKENS_FORMAT, "version": TOKENS_VERSION, "prefix": prefix,
                         "long_length": int(long_length), "short_length": int(short_length),
                         "pad": int(tokenizer.pad_token_id)}, sort_keys=True).encode())
    h.update(json.dumps(definition, sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()


def manifest_entry(tokenizer: Any, prefix: str) -> dict[str, Any]:
    long_length, short_length = int(tokenizer.lengths["long"]), int(tokenizer.lengths["short"])
    return {"format": TOKENS_FORMAT, "version": TOKENS_VERSION, "member": TOKENS_EXT,
            "fingerprint": fingerprint(tokenizer, prefix, long_length, short_length),
            "short_caption_prefix": prefix, "long_length": long_length, "short_length": short_length,
            "pad_token_id": int(tokenizer.pad_token_id)}


class TokenWriter:
    """Makes the ``{key}.tok.npy`` bytes of a record (at shard-building time)."""

    def __init__(self, encoder: Any, pad: int, prefix: str, vocab_size: int) -> None:
        self.encoder, self.pad, self.prefix = encoder, int(pad), prefix
        self.dtype = np.uint16 if vocab_size <= 1 << 16 else np.int32

    def _rows(self, texts: list[str], mode: Mode) -> list[np.ndarray]:
        if not texts:
            return []
        ids = self.encoder.encode(texts, mode=mode).numpy()
        keep = ids != self.pad
        ends = np.where(keep.any(axis=1), ids.shape[1] - np.argmax(keep[:, ::-1], axis=1), 0)
        return [row[:n] for row, n in zip(ids, ends.tolist(), strict=True)]

    def encode(self, record: FineHARDRecord, record_json: bytes) -> bytes:
        """``record_json``: the sample's ``{key}.json`` member, as written."""
        texts = record_texts(record, self.prefix)
        long_rows = self._rows([t for t, m in texts if m == "long"], "long")
        short_rows = iter(self._rows([t for t, m in texts if m == "short"], "short"))
        it_long = iter(long_rows)
        rows = [next(it_long) if m == "long" else next(short_rows) for _, m in texts]
        crc = zlib.crc32(record_json)
        head = [len(rows), crc >> 16, crc & 0xFFFF, *(len(r) for r in rows)]
        arr = np.concatenate([np.asarray(head, dtype=np.int64), *rows]).astype(self.dtype)
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        return buf.getvalue()


_NPY_HEADER = re.compile(rb"^\{'descr': '([<|][iu][1248])', 'fortran_order': False, 'shape': \((\d+),\), \} *\n$")


def _load_npy(data: bytes) -> np.ndarray:
    """``np.load`` of a 1-d integer npy; the header numpy writes for one is parsed directly (``np.load``
    evaluates it with ``ast``, ~5x the cost of the rest of this member)."""
    if data[:8] == b"\x93NUMPY\x01\x00" and len(data) >= 10:
        end = 10 + int.from_bytes(data[8:10], "little")
        m = _NPY_HEADER.match(data[10:end])
        if m is not None:
            dtype, n = np.dtype(m.group(1).decode()), int(m.group(2))
            if len(data) == end + n * dtype.itemsize:
                return np.frombuffer(data, dtype=dtype, count=n, offset=end)
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise TokensUnavailable(f"unreadable {TOKENS_EXT}: {e}") from e


@dataclass
class SampleTokens:
    """One sample's stored rows: row ``r`` is ``flat[starts[r] : starts[r] + lens[r]]``."""

    flat: np.ndarray     # the whole stored array (uint16 or int32)
    starts: list[int]    # per row
    lens: list[int]
    region_rows: list[int]   # row of each region's short_expr (long_expr is +1, negative j is +2+j)


def read_tokens(data: bytes, record_json: bytes, record: FineHARDRecord, long_length: int,
                short_length: int) -> SampleTokens:
    """Parse a ``{key}.tok.npy`` member against the sample's own ``{key}.json`` bytes and the record
    read from them; ``TokensUnavailable`` when it was not made from them or for these lengths."""
    arr = _load_npy(data)
    if arr.ndim != 1 or arr.dtype.kind not in "iu" or arr.size < _HEADER:
        raise TokensUnavailable(f"{TOKENS_EXT} is not a 1-d integer array")
    n = int(arr[0])
    want = num_rows(record)
    if n != want or arr.size < _HEADER + n:
        raise TokensUnavailable(f"{TOKENS_EXT} has {n} rows, the record has {want} texts")
    head = arr[:_HEADER + n].tolist()   # plain ints: a few numpy calls per sample cost more than the rows
    if (head[1] << 16 | head[2]) != zlib.crc32(record_json):
        raise TokensUnavailable(f"{TOKENS_EXT} was made from another record than this sample's json")
    lens = head[_HEADER:]
    if arr.size != _HEADER + n + sum(lens) or (n and (min(lens) < 0 or lens[0] > long_length
                                                      or (n > 1 and max(lens[1:]) > short_length))):
        raise TokensUnavailable(f"{TOKENS_EXT} row lengths do not fit")
    starts = list(accumulate(lens[:-1], initial=_HEADER + n))
    region_rows, r = [], 2
    for region in record.bbox_info:
        region_rows.append(r)
        r += 2 + len(region.short_expr_negs)
    return SampleTokens(arr, starts, lens, region_rows)
