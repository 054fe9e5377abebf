"""Session fixtures live in tests/fixtures/<domain>.py, one file per owner, loaded as plugins."""

import os

import torch

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

pytest_plugins = [
    "tests.fixtures.model",
    "tests.fixtures.sample",
    "tests.fixtures.data",
    "tests.fixtures.s3",
    "tests.fixtures.mlflow",
    "tests.fixtures.postgres",
    "tests.fixtures.openai_server",
]
