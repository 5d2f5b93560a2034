"""The CLI's JSON lines are a public contract: these tests pin it."""
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, make_image, png_chunk, tiny_clip, with_png_chunks

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
        assert line["label"] in [*line["scores"], "unknown", "uncertain"]
        assert line["known"] == (line["label"] in line["scores"])
    assert by_name["broken.png"]["error_code"] == "truncated" and "truncated" in by_name["broken.png"]["error"]
    assert set(by_name["broken.png"]) == {"file", "error", "error_code", "provenance"}  # a broken image fails the run
    assert by_name["broken.png"]["provenance"]["error_code"] == "malformed"  # bytes were there: read, and failed
    for name in ("notes.jpg", "README.txt"):  # no image at all, found by walking: skipped, whatever the extension
        assert by_name[name]["error_code"] == "not_an_image" and by_name[name]["skipped"] is True
        assert "not a recognised image" in by_name[name]["error"]
    assert by_name["notes.jpg"]["provenance"] == {"error": "not a recognised image format",
                                                  "error_code": "unrecognised_format"}
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
    header, row = proc.stdout.splitlines()[:2]
    assert "most probable class" in header and f"{lines[0]['label']} " in row and lines[0]["reason"] in row


def test_predict_provenance_fields(tmp_path, user_home):
    params = b"parameters\x00a cat\nSteps: 20, Sampler: Euler a, Model: v1-5-pruned-emaonly"
    sd = tmp_path / "sd.png"
    sd.write_bytes(with_png_chunks(make_image(tmp_path / "plain.png", seed=4, size=256).read_bytes(),
                                   png_chunk(b"tEXt", params)))
    missing = tmp_path / "missing.png"
    proc, lines = run_cli("predict", "--json", "--quiet", str(sd), str(missing), env_home=user_home)
    assert proc.returncode == 1, proc.stderr
    by_name = {Path(line["file"]).name: line for line in lines}
    provenance = by_name["sd.png"]["provenance"]
    assert set(provenance) == {"summary", "indication", "indication_source", "records", "c2pa"}
    assert provenance["indication"] == "generated" and "Stable Diffusion web UI" in provenance["summary"]
    assert {"source": "png", "field": "parameters.Model", "value": "v1-5-pruned-emaonly"} in provenance["records"]
    assert by_name["sd.png"]["label"] in [*by_name["sd.png"]["scores"], "unknown", "uncertain"]
    assert by_name["missing.png"]["provenance"] is None
    assert by_name["missing.png"]["provenance_reason"].startswith("file could not be read")

    proc, lines = run_cli("predict", "--json", "--quiet", "--no-provenance", str(sd), env_home=user_home)
    assert proc.returncode == 0 and "provenance" not in lines[0]
    assert lines[0]["scores"] == by_name["sd.png"]["scores"]


def test_provenance_command(tmp_path):
    sd = tmp_path / "sd.png"
    sd.write_bytes(with_png_chunks(make_image(tmp_path / "plain.png").read_bytes(),
                                   png_chunk(b"tEXt", b"Software\x00NovelAI")))
    proc, lines = run_cli("provenance", "--json", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    by_name = {Path(line["file"]).name: line["provenance"] for line in lines}
    assert by_name["sd.png"]["records"] == [{"source": "png", "field": "Software", "value": "NovelAI"}]
    assert by_name["plain.png"]["summary"].startswith("no provenance records")
    proc, _ = run_cli("provenance", str(sd), str(tmp_path / "missing.png"))
    assert proc.returncode == 1 and "metadata names NovelAI" in proc.stdout and "file could not be read" in proc.stdout
    (tmp_path / "anchors.pem").write_text("no certificates here")
    proc, _ = run_cli("provenance", "--c2pa-trust-anchors", str(tmp_path / "anchors.pem"), str(sd))
    assert proc.returncode == 2 and "C2PA trust anchors" in proc.stderr and "Traceback" not in proc.stderr


def test_enroll_saves_a_new_head_that_never_shadows_the_shipped_one(tmp_path, user_home):
    """Points 2-4: the enrolled head gets a derived name, reports how separable the generator is, and the
    default stays the shipped head; verify adds the false-match rate at the image's score."""
    shots = [make_image(tmp_path / f"s{i}.png", seed=100 + i, size=256) for i in range(6)]
    proc, lines = run_cli("enroll", "--json", "--quiet", "--name", "My Gen", *map(str, shots[:5]), env_home=user_home)
    assert proc.returncode == 0, proc.stderr
    out = lines[0]
    assert out["name"] == "my_gen" and out["n_images"] == 5 and "my_gen" in out["classes"]
    assert 0 <= out["expected_recall"] <= 1 and out["closest_class"] in out["classes"]
    assert 0 < out["closest_class_share"] <= 1 and "warning" not in out
    assert out["errors"] == {} and out["error_codes"] == {}
    name = "open-set-efficientnet-lite2-with-my_gen"
    folder = user_home / "zoo" / name
    assert Path(out["saved_to"]) == folder and (folder / "model.safetensors").is_file()
    config = json.loads((user_home / "zoo" / name / "config.json").read_text())
    assert config["base_head"] == "open-set-efficientnet-lite2" and "metrics" not in config and "figures" not in config
    assert config["enrolled"]["my_gen"]["expected_recall"] == out["expected_recall"]
    proc, _ = run_cli("zoo", "list", env_home=user_home)
    rows = {line.split()[0]: line.split()[1:3] for line in proc.stdout.splitlines()[1:]}
    assert rows["open-set-efficientnet-lite2"] == ["shipped", "-"]
    assert rows[name] == ["user", "open-set-efficientnet-lite2"]
    proc, lines = run_cli("predict", "--json", "--quiet", str(shots[5]), env_home=user_home)
    assert "my_gen" not in lines[0]["scores"]  # the default is still the shipped head
    proc, lines = run_cli("verify", "--json", "--quiet", "--zoo", name, "--model", "my_gen", str(shots[5]),
                          env_home=user_home)
    assert proc.returncode == 0, proc.stderr
    line = lines[0]
    assert {"file", "model", "score", "match", "threshold", "false_match_rate", "method"} <= set(line)
    assert line["match"] == (line["score"] >= 0) and line["threshold"] == 0.0 and line["false_match_rate"] == 0.01
    assert 0 < line["false_match_rate_at_score"] <= 1
    before = (folder / "model.safetensors").read_bytes()
    proc, lines = run_cli("enroll", "--json", "--quiet", "--name", "My Gen", *map(str, shots[1:4]), env_home=user_home)
    assert proc.returncode == 2 and "earlier enrollment" in proc.stderr and "--out" in proc.stderr
    assert len(lines) == 1 and lines[0]["name"] == "My Gen" and lines[0]["error_code"] == "not_enrolled"  # scripts
    assert "earlier enrollment" in lines[0]["error"] and set(lines[0]) == {"name", "error", "error_code"}
    assert (folder / "model.safetensors").read_bytes() == before  # the earlier enrollment is not replaced


def test_enrolling_a_copy_of_a_known_class_warns_before_saving(user_home, dev_data):
    files = sorted((dev_data / "vqgan_clip").iterdir())[40:45]
    proc, lines = run_cli("enroll", "--json", "--quiet", "--name", "my_gen", *map(str, files), env_home=user_home)
    assert proc.returncode == 3 and "not saved (--force saves it anyway)" in proc.stderr
    out = lines[0]
    assert out["saved_to"] is None and out["closest_class"] == "vqgan_clip" and "vqgan_clip" in out["warning"]
    assert not (user_home / "zoo").is_dir() or not list((user_home / "zoo").iterdir())
    shadow = user_home / "zoo" / "open-set-efficientnet-lite2"
    proc, _ = run_cli("enroll", "--force", "--quiet", "--name", "my_gen", "--out", str(shadow), *map(str, files),
                      env_home=user_home)
    assert proc.returncode == 2 and "name of a shipped head" in proc.stderr and not shadow.exists()


def test_clear_errors(tmp_path, user_home):
    proc, _ = run_cli("verify", "--json", "--model", "no_such_model", str(tmp_path), env_home=user_home)
    assert proc.returncode == 2 and "unknown model 'no_such_model'" in proc.stderr
    proc, _ = run_cli("verify", "--verifier", "blackbox:open-set-efficientnet-lite2", "x.png", env_home=user_home)
    assert proc.returncode == 2 and "blackbox:<head>#<class>" in proc.stderr
    proc, _ = run_cli("verify", "--verifier", "greybox:x", "x.png", env_home=user_home)
    assert proc.returncode == 2 and "unknown verifier scheme 'greybox'" in proc.stderr
    proc, _ = run_cli("predict", "--zoo", "no-such-head", "x.png", env_home=user_home)
    assert proc.returncode == 2 and "no zoo head named 'no-such-head'" in proc.stderr
    shots = [make_image(tmp_path / f"s{i}.png", seed=i) for i in range(2)]
    proc, lines = run_cli("enroll", "--json", "--name", "../../evil", "--out", str(tmp_path / "o"), *map(str, shots),
                          env_home=user_home)
    assert proc.returncode == 2 and "at least 3 readable images" in proc.stderr
    assert lines == [{"name": "../../evil", "error": proc.stderr.strip().splitlines()[-1].removeprefix("error: "),
                      "error_code": "not_enrolled"}]  # scripts reading stdout see why, too
    assert "Traceback" not in proc.stderr


def test_zoo_list_and_show(user_home):
    proc, _ = run_cli("zoo", "list", env_home=user_home)
    assert proc.returncode == 0 and "open-set-efficientnet-lite2" in proc.stdout
    proc, _ = run_cli("zoo", "show", "open-set-efficientnet-lite2", env_home=user_home)
    shown = json.loads(proc.stdout)
    assert shown["backbone"]["id"].startswith("efficientnet_lite2") and "real" in shown["classes"]
    assert shown["head"]["type"] == "OpenSetHead" and "state" not in shown["head"]


def test_fit_an_occ_clip_verifier_and_verify_with_it(tmp_path, user_home):
    """``fit-verifier occ-clip`` saves a verifier in the user zoo (a tiny random CLIP, offline); ``zoo list``
    shows it and ``verify --verifier occ-clip:<name>`` uses it, with the verify JSON contract."""
    clip = tiny_clip(tmp_path / "clip")
    target, negatives = tmp_path / "my_gen", tmp_path / "others"
    target.mkdir()
    negatives.mkdir()
    for i in range(6):
        make_image(target / f"{i}.png", seed=i, size=64)
    for i in range(12):
        make_image(negatives / f"{i}.png", seed=100 + i, size=64)
    (negatives / "notes.txt").write_text("no image: skipped with a warning")
    proc, lines = run_cli("fit-verifier", "occ-clip", "--backbone", clip, "--target", str(target), "--negatives",
                          str(negatives), "--steps", "3", "--quiet", env_home=user_home)
    assert proc.returncode == 0, proc.stderr
    out = lines[0]
    assert out["model"] == "my_gen" and out["n_target"] == 6 and out["n_negatives"] == 12 and out["skipped"] == 1
    assert Path(out["saved_to"]) == user_home / "zoo" / "occ-clip-my-gen" and "notes.txt" in proc.stderr
    # 3 held-out negatives cannot hold a 1 % false-match rate: said, not hidden
    assert "only 3 held-out negatives" in out["warning"] and "400 negative images" in proc.stderr
    proc, _ = run_cli("zoo", "list", env_home=user_home)
    assert "occ-clip-my-gen" in proc.stdout and "--verifier occ-clip:occ-clip-my-gen" in proc.stdout
    probe = make_image(tmp_path / "probe.png", seed=50, size=64)
    proc, lines = run_cli("verify", "--verifier", "occ-clip:occ-clip-my-gen", "--json", "--quiet", str(probe),
                          str(tmp_path / "missing.png"), env_home=user_home)
    assert proc.returncode == 1, proc.stderr
    assert set(lines[0]) == {"file", "model", "score", "match", "threshold", "false_match_rate", "method",
                             "false_match_rate_at_score"}
    assert lines[0]["model"] == "my_gen" and lines[0]["method"] == "occ-clip" and lines[0]["false_match_rate"] == 0.01
    assert lines[0]["match"] == (lines[0]["score"] >= 0) and 0 < lines[0]["false_match_rate_at_score"] <= 1
    assert lines[1] == {"file": str(tmp_path / "missing.png"), "model": "my_gen",
                        "error": f"no such file: {tmp_path / 'missing.png'}", "error_code": "not_found"}


def test_progress_rates_count_from_the_start_of_the_work(monkeypatch):
    """A first report of many images at once (cached, or a batch done together) is no absurd rate: the rate counts
    from when the work began."""
    from attribution.cli import _progress

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    update = _progress("predict", quiet=False)
    time.sleep(0.5)
    update(50, 100)  # 50 images after at least 0.5 s: at most 100 images per second
    update(100, 100)
    rates = [float(r) for r in re.findall(r"([\d.]+)img/s", err.getvalue())]
    assert rates and max(rates) <= 200, err.getvalue()
    assert _progress("predict", quiet=True) is None
