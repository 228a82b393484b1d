"""Imports as a stranger meets them: every module of bnreg_tf, resnet and efficientnet imported
first, in any order, with and without Keras loaded before it; the floors' contracts; the
building blocks free of TensorFlow until it is needed; docstring citations that resolve.

A child process per module: forked from an interpreter that has loaded only TensorFlow (so
neither Keras nor any bnreg module is loaded before the module) or only Keras; the fork saves
each child TensorFlow's start-up. The issue's own probes run in truly fresh interpreters.
"""
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("bnreg_tf", "resnet", "efficientnet")


def public_modules():
    """Every module of the three packages, by its dotted name (packages included)."""
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def run_python(code, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, timeout=timeout,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


FORK_EACH = textwrap.dedent("""
    import os, sys, traceback
    import {preload}
    failures = []
    for name in {modules!r}:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                loaded = sorted(m for m in sys.modules if m.split(".")[0] in {packages!r})
                assert not loaded, f"loaded before the first import: {{loaded}}"
                __import__(name)
                import bnreg_tf
                bnreg_tf.regularize, bnreg_tf.NormMonitor, bnreg_tf.SignalPropagation
            except BaseException:
                os.write(write, traceback.format_exc().encode())
                os._exit(1)
            os._exit(0)
        os.close(write)
        report = b""
        while chunk := os.read(read, 65536):
            report += chunk
        os.close(read)
        os.waitpid(pid, 0)
        if report:
            failures.append(f"{{name}}:\\n{{report.decode()}}")
    print("\\n".join(failures) or "ok")
""")


@pytest.mark.parametrize("preload", ["tensorflow", "keras"])
def test_every_module_imports_first_with_and_without_keras_loaded(preload):
    modules = public_modules()
    assert len(modules) > 60 and "bnreg_tf.nn.penalty_table" in modules
    out = run_python(FORK_EACH.format(preload=preload, modules=modules, packages=PACKAGES),
                     timeout=900)
    assert out.strip() == "ok", out[-5000:]


@pytest.mark.parametrize("code", [
    "import bnreg_tf; bnreg_tf.regularize; bnreg_tf.NormMonitor",
    "import bnreg_tf; from bnreg_tf.nn import nf; nf.FixedScale",
    "import bnreg_tf.nn.layers as layers; layers.ScalarBias",
    "import keras, bnreg_tf; bnreg_tf.regularize",
])
def test_the_issue_probes_in_fresh_interpreters(code):
    run_python(code)


def test_building_blocks_load_no_tensorflow_fast_path_and_no_upper_floor():
    """The TensorFlow kernels load on first use; the building blocks and model code pull in no
    data, run, study or cli module (only the trainer's serializable objects, on TF)."""
    out = run_python(textwrap.dedent("""
        import sys
        import bnreg_tf, resnet, efficientnet, bnreg_tf.nn
        print(sorted(m for m in sys.modules if m.startswith(
            ("bnreg_tf.nn.tf_kernels", "bnreg_tf.data", "bnreg_tf.study", "bnreg_tf.cli",
             "efficientnet.input_pipeline", "efficientnet.augment_ops"))))
        print(sorted(m for m in sys.modules if m.startswith("bnreg_tf.run")))
        model = resnet.wide_resnet(10, 1, num_classes=3, input_shape=(8, 8, 3))
        model(__import__("numpy").zeros((2, 8, 8, 3), "float32"), training=True)
        print("bnreg_tf.nn.tf_kernels" in sys.modules)
    """)).splitlines()
    assert out[0] == "[]"
    assert out[1] == str(["bnreg_tf.run", "bnreg_tf.run.optimizers", "bnreg_tf.run.schedules"])
    assert out[2] == "True"   # the fused BatchNorm of a training call


def _lint_imports(root):
    linter = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    return subprocess.run([linter], cwd=root, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold_and_catch_an_upward_import(tmp_path):
    """`lint-imports` (the contracts in .importlinter) passes on the repository, and fails on a
    copy in which a building block imports the run floor."""
    result = _lint_imports(ROOT)
    assert result.returncode == 0 and "0 broken" in result.stdout, result.stdout[-3000:]
    for name in (*PACKAGES, ".importlinter"):
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, tmp_path / name)
    (tmp_path / "bnreg_tf" / "nn" / "upward.py").write_text("from bnreg_tf.run import config\n")
    broken = _lint_imports(tmp_path)
    assert broken.returncode != 0 and "BROKEN" in broken.stdout.upper(), broken.stdout[-3000:]
    assert "bnreg_tf.nn.upward -> bnreg_tf.run.config" in broken.stdout


def test_docstrings_cite_sections_that_exist():
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", (ROOT / "docs" / "references.md")
                              .read_text(), re.M))
    cited = set()
    for package in (*PACKAGES, "tests", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            assert "REFERENCE" + ".md" not in text, path   # the briefing outside the repo
            cited |= {(str(path.relative_to(ROOT)), s) for s in
                      re.findall(r"references\.md §(\d+(?:\.\d+)?)", text)}
    missing = sorted((path, section) for path, section in cited if section not in headings)
    assert len(cited) > 20 and not missing, missing
