"""Raw images: the bundled sample photos and the metadata they come with (alt text, labelled boxes)."""

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from orchestration.resources import RAW, WorkspaceResource

METADATA_NAME = "metadata.jsonl"


@asset(group_name="ingest", kinds={"python"},
       description="Real photos shipped by installed packages, copied into the workspace, with a metadata "
                   "JSONL (alt text + labelled boxes) as a user's images would come with.")
def raw_images(context: AssetExecutionContext, workspace: WorkspaceResource) -> MaterializeResult:
    from fgclip_core.sample import materialize_sample, write_image_metadata

    dest = workspace.local_path(RAW)
    sample = materialize_sample(dest)
    metadata_file = write_image_metadata(sample, dest / METADATA_NAME)
    context.log.info("%d images in %s", len(sample.records), sample.images_root)
    return MaterializeResult(metadata={
        "images": len(sample.records),
        "images_root": MetadataValue.path(str(sample.images_root)),
        "metadata_file": MetadataValue.path(str(metadata_file)),
    })
