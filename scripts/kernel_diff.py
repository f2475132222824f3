"""Do AVX2 kernels round differently from this machine's? (the check behind ``make lab-avx2``): ``toylab.kernel_diff``.

python scripts/kernel_diff.py [--model builtin:toy-lengthpays]
"""

import sys

from toylab.kernel_diff import main

if __name__ == "__main__":
    sys.exit(main())
