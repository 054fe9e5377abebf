"""Bundled sample data: real photos shipped by installed packages, with hand-written FineHARD annotations.

See ``materialize.py`` for the layout and ``SOURCES.md`` for where each photo comes from and its licence.
"""

from fgclip_core.sample.materialize import (
    ANNOTATIONS_FILENAME,
    IMAGES_DIRNAME,
    SampleSet,
    SampleSource,
    SampleSourceError,
    locate_source,
    materialize_sample,
    sample_records,
    sample_sources,
)
from fgclip_core.sample.metadata import write_image_metadata

__all__ = [
    "ANNOTATIONS_FILENAME",
    "IMAGES_DIRNAME",
    "SampleSet",
    "SampleSource",
    "SampleSourceError",
    "locate_source",
    "materialize_sample",
    "sample_records",
    "sample_sources",
    "write_image_metadata",
]
