"""The built wheel installs robalign.envs/policies/hardware/configs under the robalign namespace."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = r"""
import importlib, pathlib, sys
import robalign
venv = pathlib.Path(sys.prefix)
assert pathlib.Path(robalign.__file__).is_relative_to(venv), robalign.__file__
for name in ["robalign.envs", "robalign.envs.tasks", "robalign.policies", "robalign.hardware", "robalign.configs",
             "robalign.data", "robalign.cli", "robalign.annotators", "robalign.preferences",
             "robalign.preferences.server", "robalign.rewards", "robalign.rewards.runs", "robalign.alignment",
             "robalign.pipeline"]:
    mod = importlib.import_module(name)
    assert pathlib.Path(mod.__file__).is_relative_to(venv), (name, mod.__file__)
try:
    import envs
except ImportError:
    pass
else:
    raise AssertionError("a generic top-level 'envs' package was installed")
from robalign.cli import compose
cfg = compose("demos", ["env=cube-group"])
assert cfg.env.name == "cube-group", cfg
assert compose("prefs serve", ["port=9001"]).port == 9001
assert compose("reward", ["method=rlhf"]).method == "rlhf"
assert compose("align", ["method=tpo"]).method.name == "tpo"  # the align_method group ships too
from importlib import resources
for static in ("index.html", "app.js", "app.css"):  # the annotation page ships in the wheel
    assert resources.files("robalign.preferences").joinpath("static", static).is_file(), static
import robalign.envs
print(",".join(robalign.envs.available()))
"""


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(ROOT)], check=True)
    wheel = next(wheels.glob("robalign-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # Dependencies come from this test's environment (read-only, via a .pth path entry, so
    # its editable robalign is NOT visible); robalign itself only from the wheel.
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True)
    out = subprocess.run([str(py), "-c", CHECK], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reach-around" in out.stdout and "pick-place-lang" in out.stdout
