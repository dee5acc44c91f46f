"""Fixtures shared by every test package. Tests build their own models and data: no network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# No test may reach a hub: loading code gets local paths only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2.5-VL checkpoint folder, built once per session (read-only for tests)."""
    from medsage.launch.demo.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture
def demo_samples(tmp_path):
    """Twelve generated LVKC samples (closed, choice, open) with images under tmp_path."""
    from medsage.launch.demo.samples import make_demo_samples

    return make_demo_samples(tmp_path / "demo", n=12)


@pytest.fixture(scope="session")
def lf_api(tiny_model_dir, tmp_path_factory):
    """A real OpenAI-compatible server: `llamafactory-cli api` serving the tiny model on 127.0.0.1.

    Yields its base URL (``http://127.0.0.1:<port>/v1``, model name ``tiny``); stopped at session end.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("lf_api") / "api.log"
    env = {**os.environ, "API_HOST": "127.0.0.1", "API_PORT": str(port), "API_MODEL_NAME": "tiny",
           "DISABLE_VERSION_CHECK": "1", "CUDA_VISIBLE_DEVICES": "", "API_VERBOSE": "0"}
    env.pop("API_KEY", None)
    cmd = [str(Path(sys.executable).with_name("llamafactory-cli")), "api", "--model_name_or_path",
           str(tiny_model_dir), "--template", "qwen2_vl", "--infer_backend", "huggingface"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"llamafactory-cli api did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
