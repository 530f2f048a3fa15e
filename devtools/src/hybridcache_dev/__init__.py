"""Tooling around the hybridcache service (distribution hybridcache-devtools; not shipped
with the service): `wrapper` (the development Wrapper), `stack` (`hybridcache dev`),
`bench` (`hybridcache bench`), `harness` (helpers the tests and the benchmarks share)."""
