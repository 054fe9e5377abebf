"""Machine-readable reasons a record or sample is rejected, and the error that carries one."""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    IMAGE_MISSING = "image_missing"
    IMAGE_CORRUPT = "image_corrupt"
    IMAGE_TRUNCATED = "image_truncated"
    IMAGE_TOO_LARGE = "image_too_large"
    IMAGE_TOO_SMALL = "image_too_small"
    IMAGE_OUTSIDE_ROOT = "image_outside_root"
    IMAGE_NOT_REGULAR_FILE = "image_not_regular_file"
    BBOX_OUT_OF_RANGE = "bbox_out_of_range"
    BBOX_NAN = "bbox_nan"
    BBOX_DEGENERATE = "bbox_degenerate"
    CAPTION_EMPTY = "caption_empty"
    NEGATIVES_WRONG_COUNT = "negatives_wrong_count"
    NEGATIVE_EQUALS_POSITIVE = "negative_equals_positive"
    NEGATIVES_DUPLICATED = "negatives_duplicated"
    FIELD_NOT_TEXT = "field_not_text"
    DUPLICATE_ID = "duplicate_id"
    RECORD_MALFORMED = "record_malformed"


class RecordError(ValueError):
    """A record (or its image) is unusable; ``reason`` is a ``Reason``, ``detail`` says where and why."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
