"""`python -m hybridcache_dev.bench --quick`: the same as `hybridcache bench -- --quick`."""

import sys

from hybridcache_dev.bench.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
