"""The CLI's JSON lines are a public contract: these tests pin it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, make_image

PREDICT_KEYS = {"file", "label", "known", "scores", "unknown_score"}


def run_cli(*args, env_home=None):
    env = dict(os.environ)
    if env_home:
        env["ATTRIBUTION_HOME"] = str(env_home)
    proc = subprocess.run([sys.executable, "-m", "attribution", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{") and line.endswith("}")]
    return proc, lines


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "nested").mkdir()
    make_image(folder / "a.png", seed=1, size=256)
    make_image(folder / "nested" / "b.jpg", seed=2, size=300, fmt="JPEG")
    (folder / "broken.png").write_bytes(make_image(folder / "tmp.png", seed=3).read_bytes()[:60])
    (folder / "tmp.png").unlink()
    (folder / "notes.jpg").write_text("this is text, not a JPEG")
    (folder / "README.txt").write_text("no image: a skipped row when a folder is given")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return folder


def test_predict_json_contract_with_corrupt_files(image_folder, user_home):
    proc, lines = run_cli("predict", "--json", "--quiet", str(image_folder), env_home=user_home)
    assert proc.returncode == 1, proc.stderr  # some inputs failed
    by_name = {Path(line["file"]).name: line for line in lines}
    assert sorted(by_name) == ["README.txt", "a.png", "b.jpg", "broken.png", "notes.jpg"]  # dotfiles skipped
    for name in ("a.png", "b.jpg"):
        line = by_name[name]
        assert PREDICT_KEYS <= set(line) and Path(line["file"]).is_absolute()
        assert isinstance(line["known"], bool) and isinstance(line["unknown_score"], float)
        assert abs(sum(line["scores"].values()) - 1) < 1e-3 and "real" in line["scores"]
        assert line["label"] in [*line["scores"], "unknown"]
        assert line["known"] == (line["label"] != "unknown")
    assert by_name["broken.png"]["error_code"] == "truncated" and "truncated" in by_name["broken.png"]["error"]
    assert set(by_name["broken.png"]) == {"file", "error", "error_code"}  # a broken image fails the run
    for name in ("notes.jpg", "README.txt"):  # no image at all, found by walking: skipped, whatever the extension
        assert by_name[name]["error_code"] == "not_an_image" and by_name[name]["skipped"] is True
        assert "not a recognised image" in by_name[name]["error"]
    assert "Traceback" not in proc.stderr


def test_walked_non_images_leave_the_exit_status_alone(image_folder, tmp_path, user_home):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.png").write_bytes((image_folder / "a.png").read_bytes())
    (folder / "notes.txt").write_text("text")
    (folder / "small.png").write_bytes(make_image(tmp_path / "s.png", seed=5, size=48).read_bytes())
    proc, lines = run_cli("predict", "--json", "--quiet", "--min-size", "32", str(folder), env_home=user_home)
    assert proc.returncode == 0 and len(lines) == 3 and lines[1]["skipped"] and lines[2]["width"] == 48
    proc, lines = run_cli("predict", "--json", "--quiet", str(folder / "notes.txt"), env_home=user_home)
    assert proc.returncode == 1 and "skipped" not in lines[0] and lines[0]["error_code"] == "not_an_image"


def test_predict_all_good_exits_zero_and_table(image_folder, user_home):
    proc, lines = run_cli("predict", "--json", "--quiet", str(image_folder / "a.png"), env_home=user_home)
    assert proc.returncode == 0 and len(lines) == 1
    proc, _ = run_cli("predict", "--quiet", str(image_folder / "a.png"), str(image_folder / "missing.png"),
                      env_home=user_home)
    assert proc.returncode == 1 and "a.png" in proc.stdout and "no such file" in proc.stdout


def test_enroll_then_predict_and_verify(tmp_path, user_home):
    shots = [make_image(tmp_path / f"s{i}.png", seed=100 + i, size=256) for i in range(6)]
    out = tmp_path / "with-my-gen"
    proc, lines = run_cli("enroll", "--json", "--quiet", "--name", "My Gen", "--out", str(out),
                          *map(str, shots[:5]), env_home=user_home)
    assert proc.returncode == 0, proc.stderr
    assert lines[0]["name"] == "my_gen" and lines[0]["n_images"] == 5 and "my_gen" in lines[0]["classes"]
    assert lines[0]["errors"] == {} and lines[0]["error_codes"] == {}
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    proc, lines = run_cli("predict", "--json", "--quiet", "--zoo", str(out), str(shots[5]), env_home=user_home)
    assert "my_gen" in lines[0]["scores"]
    proc, lines = run_cli("verify", "--json", "--quiet", "--zoo", str(out), "--model", "my_gen",
                          str(shots[5]), env_home=user_home)
    assert proc.returncode == 0, proc.stderr
    assert {"file", "model", "score", "match"} <= set(lines[0]) and lines[0]["model"] == "my_gen"
    assert isinstance(lines[0]["match"], bool) and lines[0]["match"] == (lines[0]["score"] > 0)


def test_clear_errors(tmp_path, user_home):
    proc, _ = run_cli("verify", "--json", "--model", "no_such_model", str(tmp_path), env_home=user_home)
    assert proc.returncode == 2 and "unknown model 'no_such_model'" in proc.stderr
    proc, _ = run_cli("predict", "--zoo", "no-such-head", "x.png", env_home=user_home)
    assert proc.returncode == 2 and "no zoo head named 'no-such-head'" in proc.stderr
    shots = [make_image(tmp_path / f"s{i}.png", seed=i) for i in range(2)]
    proc, _ = run_cli("enroll", "--name", "../../evil", "--out", str(tmp_path / "o"), *map(str, shots),
                      env_home=user_home)
    assert proc.returncode == 2 and "at least 3 readable images" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_zoo_list_and_show(user_home):
    proc, _ = run_cli("zoo", "list", env_home=user_home)
    assert proc.returncode == 0 and "open-set-efficientnet-lite2" in proc.stdout
    proc, _ = run_cli("zoo", "show", "open-set-efficientnet-lite2", env_home=user_home)
    shown = json.loads(proc.stdout)
    assert shown["backbone"].startswith("efficientnet_lite2") and "real" in shown["classes"]
