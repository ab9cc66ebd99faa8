"""Actor process entry point: ``python -m rlops.runtime._actor_main FD``."""

import sys

from rlops.runtime.process import worker_entry

if __name__ == "__main__":
    worker_entry(int(sys.argv[1]))
