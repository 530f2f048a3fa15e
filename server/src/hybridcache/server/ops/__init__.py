"""Operations, cross-cutting: logs, metrics and scrape-time telemetry, tracing, the HTTP
probes, health checks, the heap settler, the worker supervisor and the operator's commands
(`cli`: `hybridcache stats` / `watch`). The other packages may log and count through it;
it holds no cache behaviour.
"""
