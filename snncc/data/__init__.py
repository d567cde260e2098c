"""Input data for `verify`, `simulate`, `estimate` and the targets that read data (speck
calibration): `inputs` reads data set files, folders of shards and seeded random inputs into
checked float64 batches (`InputBatches`); `workers` spreads those batches over worker processes
or Ray tasks and merges their statistics exactly (`map_batches`)."""
