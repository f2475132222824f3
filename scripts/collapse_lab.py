"""The toy lab's runner (``make collapse-lab``, ``make lab-<experiment>``, ``make lab-avx2``): ``toylab.runner``.

python scripts/collapse_lab.py --help
"""

import sys

from toylab.runner import main

if __name__ == "__main__":
    sys.exit(main())
