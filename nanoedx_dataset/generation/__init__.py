"""Building databases: the generation config, one sample, the executor that spreads the work,
one file, and folders of shards."""
