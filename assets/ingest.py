"""Raw images: one image batch of the raw source (a partition of ``image_batches``), copied as it is now."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from fgclip_core.data.preview import quarantine_md
from orchestration.data_resources import DataStoreResource, RawSourceResource
from orchestration.partitions import image_batches
from orchestration.refs import RecordsRef
from orchestration.stage_metadata import images_markdown, location


@asset(group_name="ingest", kinds={"python"}, partitions_def=image_batches, io_manager_key="ref_io_manager",
       description="The batch's images and metadata.jsonl (alt text, labelled boxes) copied from the raw source "
                   "into a folder of this materialisation; later changes to the source do not alter it.")
def raw_images(context: AssetExecutionContext, raw_source: RawSourceResource,
               data: DataStoreResource) -> MaterializeResult:
    from fgclip_core.annotate.config import PipelineConfig
    from fgclip_core.annotate.images import list_images
    from fgclip_core.annotate.raw_batches import snapshot_batch

    batch = context.partition_key
    with data.writing("raw_images", batch, context.run_id) as out:
        snap = snapshot_batch(raw_source.batch_url(batch), out)
    ref = RecordsRef(uri=out, sha256=snap.sha256, partition=batch, images_uri=out,
                     counts={"images": snap.images, "metadata_rows": snap.metadata_rows,
                             "metadata_rows_rejected": len(snap.metadata_rejected),
                             "ignored_files": snap.ignored_files})
    removed = data.prune("raw_images", batch, out)
    context.log.info("%s: %d images, %d metadata rows (%d other files ignored) -> %s", batch, snap.images,
                     snap.metadata_rows, snap.ignored_files, out)
    urls = [r.url for r in list_images(out, PipelineConfig().extensions)]
    preview = images_markdown(urls, f"batch {batch}")
    if snap.metadata_rejected:
        preview = MetadataValue.md(f"{preview.md_str}\n\n#### metadata.jsonl lines left out\n\n"
                                   + quarantine_md(snap.metadata_rejected))
    return MaterializeResult(value=ref, metadata={
        **ref.counts, "bytes": snap.bytes, "sha256": snap.sha256, "uri": location(out),
        "source": location(raw_source.batch_url(batch)), "old_versions_removed": len(removed),
        "preview": preview,
    })
