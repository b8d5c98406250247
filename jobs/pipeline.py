"""The README's main job (`make run`): SynthPeople → CASL → lifting in three modes → OG-Net-Small
per mode and the 2D baseline → evaluation → runs/pipeline/<name>/report.md.

    python jobs/pipeline.py [--smoke] [--name NAME] [--casl.optim.max_minutes 8] ...
    ray job submit --working-dir . -- python jobs/pipeline.py --smoke

Re-running with the same name reuses finished stages (see mirror3d/jobs/pipeline.py).
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
