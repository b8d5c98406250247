"""Lift a re-id dataset to point-cloud parquet shards on Ray Data (actor pool).

    python jobs/lift.py --mode flat --root data/synthpeople/Market-1501
    python jobs/lift.py --mode casl-visible+bg --mask_dir data/synthpeople/Market-HQ \
        --checkpoint runs/casl/<run>/model_final.pt --actors 2
    ray job submit --working-dir . -- python jobs/lift.py --mode flat

Shards go to data/lifted/<mode> (``--out``); the summary and pictures to runs/lift/<name>.
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["lift", *sys.argv[1:]]))
