"""Dataset formats, splits, Parquet shards and the synthetic benchmark generator."""
