"""Build, measure and ship the toy reasoners' starting checkpoints (``make reasoners``): ``toylab.ship``.

python scripts/ship_reasoners.py --help
"""

import sys

from toylab.ship import main

if __name__ == "__main__":
    sys.exit(main())
