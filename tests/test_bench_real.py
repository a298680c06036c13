"""bench/real.py's records: rows added to docs/real.md without losing earlier sessions' rows, and every
champion-and-challenger verdict kept."""

import json
from pathlib import Path

import pytest
from conftest import bench_module



@pytest.fixture(scope="module")
def real():
    return bench_module("real")


def result(variant: str, run: str, f1: tuple[float, float, float], label: str | None = None) -> dict:
    places = [{"place": p, "precision": 0.5, "recall": 0.4, "f1": f, "ap50": 0.3, "pixel_iou": 0.5, "n_predicted": 10,
               "n_true": 12, "count_ratio": 0.83, "detect_s": 1.0, "detect_peak_gib": 1.0, "f1_by_size": {"0–25": 0.1},
               "errors": {"false_negatives": dict.fromkeys(("merged", "split", "missed", "misshaped"), 1),
                          "false_positives": dict.fromkeys(("merge", "spurious", "part", "misshaped"), 2)}}
              for p, f in zip(("nairobi_ke", "kampala_ug", "nairobi_ke@0.5m"), f1)]
    return {"variant": variant, "what": "x", "seed": 1, "minutes": 0, "init": None, "run": run, "epochs": 66,
            "tta": 1, "steps": 2112, "train_s": 2580.0, "energy_kwh": 0.0123, "places": places, "train_peak_gib": None,
            "finished": "2026-12-07T06:00+00:00", **({"label": label} if label else {})}


def test_new_rows_replace_their_own_and_keep_every_other(real, tmp_path):
    doc = tmp_path / "real.md"
    doc.write_text("# Real\n\nintro\n")
    real.write_doc_rows(doc, [result("gap", "gap-s1-66ep", (0.36, 0.52, 0.35))])
    real.write_doc_rows(doc, [result("base", "base-s1-66ep", (0.30, 0.40, 0.33))])
    real.write_doc_rows(doc, [result("gap", "gap-s1-66ep", (0.371, 0.531, 0.341))])  # the same run, scored again
    text = doc.read_text()
    scores = [line for line in text.split("What the errors")[0].splitlines() if line.startswith("| gap") or
              line.startswith("| base")]
    assert len(scores) == 6 and "**0.371**" in text and "**0.360**" not in text and "**0.520**" not in text
    assert "**0.300**" in text
    assert scores[0].startswith("| gap | 1 | nairobi_ke |")  # replaced where it stood
    assert text.startswith("# Real\n\nintro\n") and text.count("<!-- real-table:begin -->") == 1


def test_every_challenge_is_a_row_and_a_win_ships(real, tmp_path):
    doc = tmp_path / "real.md"
    doc.write_text("# Real\n")
    champion = result("champion", "vs-champion-abcd", (0.36, 0.52, 0.35), label="champion-abcd (shipped)")
    lost = result("gap", "gap-s2-75min-after-champion-abcd", (0.37, 0.52, 0.35))
    real.write_challenge(doc, champion, lost, "challenger loses: …", shipped=False)
    won = result("gap", "gap-s3-75min-after-champion-abcd", (0.40, 0.56, 0.35))
    real.write_challenge(doc, champion, won, "challenger wins: …", shipped=True)
    real.write_challenge(doc, champion, lost, "challenger loses: … (again)", shipped=False)
    rows = [line for line in doc.read_text().splitlines() if line.startswith("| 2026")]
    assert len(rows) == 2 and "0.360 → **0.400**" in rows[0] and "**shipped**" in rows[0]
    assert "(again)" in rows[1] and "## Champion and challengers" in doc.read_text()


def test_a_continuation_at_another_learning_rate_is_a_run_of_its_own(real, tmp_path):
    (tmp_path / "gap-s1-66ep").mkdir()
    (tmp_path / "gap-s1-66ep" / "model.ofp").write_bytes(b"x")
    default = real.run_dir(tmp_path, "gap", 2, 60, "gap-s1-66ep")
    slower = real.run_dir(tmp_path, "gap", 2, 60, "gap-s1-66ep", lr=0.0003)
    assert default.name == "gap-s2-60min-after-gap-s1-66ep"
    assert slower.name == "gap-s2-60min-lr0.0003-after-gap-s1-66ep"
    assert real.run_dir(tmp_path, "gap", 2, 60, "gap-s1-66ep", lr=real.INIT_LR) == default
    assert real.run_dir(tmp_path, "gap", 2, 60, lr=0.0003).name == "gap-s2-60min"  # no continuation, no rate
    record = {"variant": "gap", "seed": 2, "minutes": 60, "init": "gap-s1-66ep", "lr": 0.0003}
    assert real.reproduce_command(record, "--challenge") == (
        "python bench/real.py --variant gap --seed 2 --minutes 60 --init gap-s1-66ep --lr 0.0003 --challenge")
    assert "--lr" not in real.reproduce_command({**record, "lr": real.INIT_LR}, "--challenge")


def test_a_bundle_is_scored_on_its_fp32_network_unless_an_engine_is_asked_for(real, tmp_path, monkeypatch):
    commands = []

    def fake_run(cmd, log):
        commands.append(cmd)
        if cmd[3] == "evaluate":
            metrics = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "ap": 0.4, "pixel_iou": 0.5, "n_predicted": 2,
                       "n_true": 2, "by_size": []}
            Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps(metrics))
        return 1.0

    monkeypatch.setattr(real, "run", fake_run)
    for model, extra in ((tmp_path / "m.ofp", []), (tmp_path / "m.int8.onnx", []),
                         (tmp_path / "m.ofp", ["detect.adapt_bn=16"]), (tmp_path / "m.ofp", ["detect.engine=torch"])):
        commands.clear()
        assert real.score(tmp_path, model, "p", "scene.tif", "labels.geojson", extra)["f1"] == 0.5
        engines = [o for o in commands[0] if o.startswith("detect.engine=")]
        assert engines == (["detect.engine=onnx"] if model.suffix == ".ofp" and not extra else
                           [o for o in extra if o.startswith("detect.engine=")])


def test_self_training_pseudo_labels_the_held_out_imagery_and_never_reads_its_labels(real, tmp_path, monkeypatch):
    commands = []
    monkeypatch.setattr(real, "run", lambda cmd, log: commands.append(cmd) or 1.0)
    real.train(tmp_path, ["train.init=champion.ofp"], 60, 2, teacher=tmp_path / "champion.ofp")
    real.train(tmp_path, [], 60, 2)
    self_trained, trained = commands
    assert self_trained[3:6] == ["self-train", "--teacher", str(tmp_path / "champion.ofp")]
    unlabelled = [self_trained[i + 1] for i, a in enumerate(self_trained) if a == "--unlabelled"]
    assert [Path(u).name for u in unlabelled] == ["nairobi_ke", "kampala_ug"]
    labels = [a for i, a in enumerate(self_trained) if i and self_trained[i - 1] == "--labels"]
    assert labels and not any("nairobi" in a or "kampala" in a for a in labels)
    assert trained[3] == "train" and "--unlabelled" not in trained


def test_a_challenger_at_a_coarser_resolution_than_the_champion_is_the_cheaper_kind(real, tmp_path, monkeypatch,
                                                                                     tiny_bundle):
    from openfootprints.model import base
    from openfootprints.model.bundle import load_bundle, save_bundle

    monkeypatch.setattr(base, "BASE_MODEL", tiny_bundle)  # the champion: 0.5 m
    coarse = load_bundle(tiny_bundle)
    coarse.resolution_m = 0.6
    assert real.coarser_than_champion(save_bundle(coarse, tmp_path / "coarse.ofp"))
    assert not real.coarser_than_champion(tiny_bundle)
    assert real.COARSER_MIN_GAIN < 0  # within a tolerance of the champion, not above it


def test_the_soup_takes_every_trained_continuation_of_the_champion_at_its_resolution(real, tmp_path, monkeypatch,
                                                                                      tiny_bundle):
    from openfootprints.model import base
    from openfootprints.model.bundle import load_bundle, save_bundle

    monkeypatch.setattr(base, "BASE_MODEL", tiny_bundle)  # the champion: 0.5 m
    tag = real.champion_tag()

    def run(name: str, resolution_m: float, **result) -> None:
        folder = tmp_path / name
        folder.mkdir()
        bundle = load_bundle(tiny_bundle)
        bundle.resolution_m = resolution_m
        save_bundle(bundle, folder / "model.ofp")
        (folder / "result.json").write_text(json.dumps({"variant": "gap", "trained": name, **result}))

    run(f"gap-s2-60min-after-{tag}", 0.5)  # lost its challenge: still a member
    run(f"self_train-s2-50min-lr0.0003-after-{tag}", 0.5)
    run(f"res05-s1-55min-lr0.0003-after-{tag}", 0.6)  # another resolution
    run(f"gap-s2-60min-after-{tag}-window_px512", 0.5, trained=f"gap-s2-60min-after-{tag}")  # a detect option
    run(f"soup3-after-{tag}", 0.5, variant="soup")
    run(f"greedy3-after-{tag}", 0.5, variant="greedy_soup")
    run("gap-s1-66ep", 0.5)  # not a continuation
    assert [p.name for p in real.continuations_of_champion(tmp_path)] == [
        f"gap-s2-60min-after-{tag}", f"self_train-s2-50min-lr0.0003-after-{tag}"]



def test_paired_scores_two_runs_on_the_same_squares_and_averages_the_places_the_rule_does(real, tiny_scene,
                                                                                          tmp_path, monkeypatch):
    import geopandas as gpd

    paired = bench_module("paired")
    monkeypatch.setattr(paired.real, "HELD_OUT", {"here": (str(tiny_scene[0]), str(tiny_scene[1]))})
    truth = gpd.read_file(tiny_scene[1]).assign(confidence=0.9)
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, found in ((first, truth), (second, truth.iloc[: len(truth) // 2])):
        folder.mkdir()
        found.to_parquet(folder / "here.parquet")
    rows = paired.paired(first, second, tmp_path, tmp_path / "unused")  # HELD_OUT's paths are absolute
    assert set(rows) == {"here", "mean"}
    assert rows["here"]["first"] == 1.0 and rows["here"]["second"] < 1.0
    assert rows["here"]["difference"] == pytest.approx(rows["here"]["second"] - 1.0)
    assert rows["here"]["low"] <= rows["here"]["difference"] <= rows["here"]["high"] <= 0
    assert rows["mean"]["difference"] == rows["here"]["difference"]
    assert "mean of here" in paired.describe(rows)
    assert paired.paired(first, tmp_path, tmp_path, tmp_path) == {}  # nothing detected in both
