"""Build a tiny random Qwen2 model and byte-level tokenizer (the same as `groupwise build-tiny`).

python scripts/build_tiny_model.py OUT_DIR [--hidden 64] [--layers 2] [--seed 0]
"""

import sys

from app.cli import main

if __name__ == "__main__":
    sys.exit(main(["build-tiny", *sys.argv[1:]]))
