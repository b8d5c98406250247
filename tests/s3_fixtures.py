"""A local S3 API for the storage tests: moto's server on 127.0.0.1 (``moto[server]`` is a dev
dependency, so ``make test`` installs it), talked to by pyarrow's ``S3FileSystem`` through the
standard AWS variables (``AWS_ENDPOINT_URL``), exactly as a user points mirror3d at MinIO."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def s3_env(port: int) -> dict[str, str]:
    """The variables that send pyarrow (and boto3) to the local server."""
    return {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",  # never ask 169.254.169.254 for credentials
    }


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1:``port`` in a child process."""

    def __init__(self, port: int, log_path: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **s3_env(port)})
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.stop()
                    raise RuntimeError(f"moto server did not start (log: {log_path})")
                time.sleep(0.2)

    def bucket(self) -> str:
        """A new empty bucket; returns ``s3://<name>``."""
        import boto3

        name = f"m3d-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.url).create_bucket(Bucket=name)
        return f"s3://{name}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()
