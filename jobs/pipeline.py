"""The README's main job (`make run`): the end-to-end pipeline on the embedded default.

Stage 1 so far: a turntable of the CASL template sphere under SH lighting. Later stages
(SynthPeople → CASL → lifting → OG-Net → report) plug in here as they land.

    python jobs/pipeline.py [--name NAME] [--frames 36] [--render.image_size 64,128] ...
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["turntable", *sys.argv[1:]]))
