"""CASL ablations on one budget: full vs No IM vs No Prototype Loop vs No Encoder Loop, each
evaluated with eval-casl; writes runs/ablate_casl/<name>/ablation.md and ablation.json.

    python jobs/ablate_casl.py [--minutes 8] [--variants full,no-im] [--base.optim.lr 1e-3] ...
    ray job submit --working-dir . -- python jobs/ablate_casl.py --base.data.root /abs/Market-HQ
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["ablate-casl", *sys.argv[1:]]))
