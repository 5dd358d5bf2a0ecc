"""`make bench`: the pipeline's throughput, latency and memory against baselines (see __main__)."""
