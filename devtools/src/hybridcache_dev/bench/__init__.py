"""The benchmark suite (`hybridcache bench`, `make bench`); results in docs/BENCHMARKS.md.

runner        command line: which benchmarks, quick or full, where results go
stats         percentiles, summaries, median of runs (pure, unit-tested)
loadgen       N spawned client processes x M in-flight callers, raw-bytes gRPC calls
servers       server processes pinned to core 0 (floor servers, the real Service)
floor         the floor: empty RPC (sync vs aio), Redis GET, PUBLISH->subscribe, Wrapper GET
service       cache-hit / miss / propagation figures of the real Service
memory        in-process figures of the cache core (bytes per entry, snapshot load)
strategy      full replication vs hybrid vs on-demand only, as configurations
report        JSON + the Markdown written into docs/BENCHMARKS.md
"""
