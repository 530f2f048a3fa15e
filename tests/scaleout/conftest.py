"""Selection for the scale-out tests, by marker alone.

* the default run (`scripts/test`, `pytest`) runs the lean ones: client failover across
  3 replicas, the snapshot cap, the Sentinel failover of one replica, workers, Cluster;
* `make scaleout` (`-m scaleout`) runs only the measurements (10-replica stampede figures,
  the 3-replica + Sentinel "done" run with its convergence bound, the workers' throughput).

Items marked `scaleout` are deselected by the default `-m "not slow and not soak and not
scaleout"` in pyproject.toml; a `-m` given on the command line replaces it.
"""
