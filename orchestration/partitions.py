"""The partitions of the data assets: one per image batch (a direct subfolder of the raw source).

Partitions are added by the raw-source sensor (``orchestration.sensors``) as batches land, or by hand
in the UI (Assets -> raw_images -> Partitions -> Add partition).
"""

from dagster import DynamicPartitionsDefinition

image_batches = DynamicPartitionsDefinition(name="image_batches")
