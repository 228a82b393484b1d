"""Every Python snippet of the README, run as a stranger runs it: in order, in one fresh working
directory, each in its own fresh interpreter (as its first import), and again with Keras loaded
before it (each snippet in a child forked from an interpreter that has imported Keras)."""
import os
import pathlib
import re
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent


def snippets():
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 6, "the README's Python snippets"
    return blocks


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "BNREG_QUIET": "1"}


def test_every_snippet_runs_in_a_fresh_interpreter(tmp_path):
    for index, code in enumerate(snippets()):
        result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"snippet {index}:\n{code}\n{result.stderr[-3000:]}"
    assert (tmp_path / "mobilenet_el2.keras").exists() and (tmp_path / "spp.csv").exists()


FORK_EACH = textwrap.dedent("""
    import os, sys, traceback
    import keras
    for index, code in enumerate({snippets!r}):
        pid = os.fork()
        if pid == 0:
            try:
                exec(compile(code, f"<snippet {{index}}>", "exec"), {{"__name__": "__main__"}})
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"snippet {{index}} failed")
""")


def test_every_snippet_runs_with_keras_imported_first(tmp_path):
    result = subprocess.run([sys.executable, "-c", FORK_EACH.format(snippets=snippets())],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
