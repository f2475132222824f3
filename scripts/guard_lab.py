"""The collapse guard calibrated and validated on the lab's runs (``make guard-lab``): ``toylab.guard_lab``.

python scripts/guard_lab.py --help
"""

import sys

from toylab.guard_lab.cli import main

if __name__ == "__main__":
    sys.exit(main())
