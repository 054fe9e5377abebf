"""The partitions of the per-batch assets: one per image batch of the raw source (added by the sensor)."""

from dagster import DynamicPartitionsDefinition

image_batches = DynamicPartitionsDefinition(name="image_batches")
