"""Start the demo (Gradio page + REST API on Ray Serve) from the newest runs of make run.

    python jobs/serve.py [--casl RUN] [--reid RUN] [--port 8000]
    make demo ARGS="--port 8001"

Prints the URL (http://127.0.0.1:8000/ui) and serves until Ctrl-C; with no trained run it names
the command that makes one and exits 1.
"""

import sys

from mirror3d.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
