"""The annotation of one image batch in three stages, each reading the previous stage's records:
long captions -> region boxes (phrases, boxes, region captions) -> hard negatives (``fgclip_core.annotate``)."""

from dagster import AssetExecutionContext, Backoff, Failure, MaterializeResult, RetryPolicy, asset

from orchestration.data_resources import AnnotationResource, DataStoreResource
from orchestration.partitions import image_batches
from orchestration.refs import RecordsRef
from orchestration.stage_metadata import counts_metadata, preview_markdown, read_jsonl_rows

# an unreachable endpoint fails the step; Dagster retries it (then the batch's run fails, naming the endpoint)
ENDPOINT_RETRY = RetryPolicy(max_retries=2, delay=2, backoff=Backoff.EXPONENTIAL)
POOL = "annotation_endpoint"  # at most the pool's limit of steps call the annotation endpoint at once


def annotate_stage(context: AssetExecutionContext, stage: str, asset_name: str, upstream: RecordsRef,
              annotation: AnnotationResource, data: DataStoreResource) -> MaterializeResult:
    from fgclip_core import storage
    from fgclip_core.annotate.pipeline import read_records
    from fgclip_core.annotate.stages import QUARANTINE_DIR, RECORDS_DIR, EndpointUnavailableError, run_stage

    batch = context.partition_key
    cfg = annotation.config(upstream.images_uri)
    previous = None if stage == "captions" else upstream.uri
    try:
        with data.writing(asset_name, batch, context.run_id) as out:
            summary = run_stage(stage, cfg, upstream.images_uri, out, previous)
    except EndpointUnavailableError as e:
        attempt = context.retry_number + 1
        if context.retry_number < ENDPOINT_RETRY.max_retries:
            context.log.warning("%s (attempt %d of %d; retrying)", e, attempt, ENDPOINT_RETRY.max_retries + 1)
            raise
        # the last attempt: the run fails with the endpoint in its message (not only "max retries exceeded")
        raise Failure(description=f"batch {batch}: {e} (after {attempt} attempts)", allow_retries=False) from None
    batch_images = upstream.counts.get("batch_images", upstream.counts.get("images", summary.inputs))
    counts = {"in": summary.inputs, "out": summary.records, "quarantined": summary.quarantined,
              "batch_images": batch_images, "regions": summary.regions,
              "regions_with_negatives": summary.regions_with_negatives}
    ref = RecordsRef(uri=out, sha256=summary.sha256, partition=batch, images_uri=upstream.images_uri, counts=counts)
    removed = data.prune(asset_name, batch, out)
    context.log.info("%s %s: %d in, %d out, %d quarantined %s -> %s", asset_name, batch, summary.inputs,
                     summary.records, summary.quarantined, summary.quarantined_by_stage or "", out)
    preview = preview_markdown(read_records(out)[:20], upstream.images_uri,
                               read_jsonl_rows(storage.join(out, QUARANTINE_DIR)), f"{asset_name}, batch {batch}")
    return MaterializeResult(value=ref, metadata={
        **counts_metadata(ref, summary.quarantined_by_stage), "records": storage.join(out, RECORDS_DIR),
        "old_versions_removed": len(removed), "preview": preview,
    })


@asset(group_name="annotation", kinds={"python"}, partitions_def=image_batches, io_manager_key="ref_io_manager",
       pool=POOL, retry_policy=ENDPOINT_RETRY,
       description="A long caption (and a short one) per image: from the batch's metadata.jsonl / sidecar .txt, "
                   "or a vision-language endpoint. Images that do not decode or get no caption are quarantined.")
def long_captions(context: AssetExecutionContext, raw_images: RecordsRef, annotation: AnnotationResource,
                  data: DataStoreResource) -> MaterializeResult:
    return annotate_stage(context, "captions", "long_captions", raw_images, annotation, data)


@asset(group_name="annotation", kinds={"python"}, partitions_def=image_batches, io_manager_key="ref_io_manager",
       pool=POOL, retry_policy=ENDPOINT_RETRY,
       description="Phrases + boxes + region captions per record: the boxes that come with the images "
                   "(metadata.jsonl) or a detector; a record whose boxes fail is quarantined.")
def region_boxes(context: AssetExecutionContext, long_captions: RecordsRef, annotation: AnnotationResource,
                 data: DataStoreResource) -> MaterializeResult:
    return annotate_stage(context, "regions", "region_boxes", long_captions, annotation, data)


@asset(group_name="annotation", kinds={"python"}, partitions_def=image_batches, io_manager_key="ref_io_manager",
       pool=POOL, retry_policy=ENDPOINT_RETRY,
       description="Hard negatives for every region (rule-based by default, or an LLM endpoint).")
def hard_negatives(context: AssetExecutionContext, region_boxes: RecordsRef, annotation: AnnotationResource,
                   data: DataStoreResource) -> MaterializeResult:
    return annotate_stage(context, "negatives", "hard_negatives", region_boxes, annotation, data)

