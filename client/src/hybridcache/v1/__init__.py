"""Generated from protos/hybridcache/v1 by scripts/gen_protos.py. Do not edit."""
