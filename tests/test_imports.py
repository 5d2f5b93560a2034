"""The package imports lazily: heads and the zoo work without torch; argparse lives in the CLI only."""
import json
import subprocess
import sys

from conftest import REPO

HEAVY = ("torch", "torchvision", "timm", "open_clip", "gradio", "diffusers")

WITHOUT_TORCH = f"""
import json, sys
import attribution.heads, attribution.persistence, attribution.storage, attribution.zoo
from attribution import OpenSetHead, ZooError, list_zoo, load_head
head, config = load_head()  # the shipped head: JSON and safetensors, read with NumPy
listed = list_zoo()
loaded = sorted(m for m in {HEAVY!r} if m in sys.modules)
import attribution
attribution.Attributor
print(json.dumps({{"heavy": loaded, "classes": head.classes_, "listed": len(listed),
                  "torch_after_attributor": "torch" in sys.modules}}))
"""


def run_python(*args: str) -> subprocess.CompletedProcess:
    """A fresh interpreter in the repository (nothing imported yet)."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=300)


def test_heads_and_zoo_import_without_torch():
    proc = run_python("-c", WITHOUT_TORCH)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["heavy"] == [] and out["classes"] and out["listed"] >= 1
    assert out["torch_after_attributor"]  # the lazy name resolves, and then the backbones are loaded


def test_every_public_name_resolves():
    import attribution

    for name in attribution.__all__:
        assert getattr(attribution, name) is not None, name
    assert set(attribution.__all__) <= set(dir(attribution))


def test_cli_help_and_argparse_only_in_cli():
    proc = run_python("-m", "attribution", "--help")
    assert proc.returncode == 0 and "batch" in proc.stdout and "predict" in proc.stdout, proc.stderr
    users = sorted(str(p.relative_to(REPO)) for p in (REPO / "attribution").rglob("*.py")
                   if "argparse" in p.read_text(encoding="utf-8"))
    assert users == ["attribution/cli.py"]
