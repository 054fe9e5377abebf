"""Annotated records: captions, phrases + boxes, hard negatives (``fgclip_core.annotate``)."""

from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from assets.ingest import METADATA_NAME, raw_images
from orchestration.resources import ANNOTATED, RAW, WorkspaceResource


class AnnotationConfig(Config):
    """The demo's settings by default: captions and boxes from the images' metadata file."""

    box_backend: str = Field(default="metadata", description="boxes.backend: none, metadata, hf_local, openai")
    overrides: list[str] = Field(default_factory=list, description="more AnnotateConfig `key=value` settings")


@asset(group_name="annotation", deps=[raw_images], kinds={"python"},
       description="FineHARD-style records from the raw images (records/ + quarantine/ chunk files); "
                   "a re-run skips chunks already done with the same settings.")
def annotated_records(context: AssetExecutionContext, config: AnnotationConfig,
                      workspace: WorkspaceResource) -> MaterializeResult:
    from fgclip_core.annotate.config import load_annotate_config
    from fgclip_core.annotate.pipeline import Annotator

    raw = workspace.url(RAW)
    metadata_file = workspace.url(RAW, METADATA_NAME)
    overrides = [f"captions.metadata_file={metadata_file}", f"boxes.backend={config.box_backend}"]
    if config.box_backend == "metadata":
        overrides.append(f"boxes.metadata_file={metadata_file}")
    cfg = load_annotate_config(None, [*overrides, *config.overrides])
    out = workspace.url(ANNOTATED)
    summary = Annotator(cfg, workspace.url(RAW, "images"), out).run(progress=False)
    context.log.info("annotated %d images into %s: %d records, %d quarantined",
                     summary.images, out, summary.records, summary.quarantined)
    return MaterializeResult(metadata={
        "images": summary.images,
        "records": summary.records,
        "quarantined": summary.quarantined,
        "quarantined_by_stage": summary.quarantined_by_stage,
        "regions": summary.regions,
        "regions_with_negatives": summary.regions_with_negatives,
        "chunks_skipped": summary.chunks_skipped,
        "path": MetadataValue.path(out),
        "raw": MetadataValue.path(raw),
    })
