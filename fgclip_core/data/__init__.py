"""Training data: FineHARD records, validation with quarantine, WebDataset shards, the loader."""
