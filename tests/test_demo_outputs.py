"""`dlss-demo --overwrite` removes only what a demo run wrote, and a failed run loses nothing."""

from __future__ import annotations

import json
import os

import pytest

from dlss_dist import demo


def fake_stages(output_dir, **settings):
    """Writes one file into each demo entry, like a (very small) real run."""
    del settings
    for name in demo.DEMO_OUTPUTS:
        path = os.path.join(output_dir, name)
        if name.endswith(".md"):
            with open(path, "w") as f:
                f.write("report\n")
        else:
            os.makedirs(path)
            with open(os.path.join(path, "written.txt"), "w") as f:
                f.write(name)
    return os.path.join(output_dir, "report.md"), {"ok": True}


def failing_stages(output_dir, **settings):
    os.makedirs(os.path.join(output_dir, "photos"))
    with open(os.path.join(output_dir, "photos", "half.png"), "w") as f:
        f.write("partial")
    raise ValueError("train_loop.total_steps must be >= 1, got 0.")


def run(output_dir, monkeypatch, stages=fake_stages, **kwargs):
    monkeypatch.setattr(demo, "_run_stages", stages)
    return demo.run_demo(str(output_dir), scale=2, **kwargs)


def snapshot(folder) -> dict[str, str]:
    result = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                result[os.path.relpath(path, folder)] = f.read().decode(errors="replace")
    return result


def test_a_run_records_what_it_wrote(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch)
    manifest = json.loads((tmp_path / demo.MANIFEST_FILE).read_text())
    assert manifest["complete"] and "photos/written.txt" in manifest["files"]
    assert "report.md" in manifest["files"]


def test_overwrite_replaces_a_previous_run_and_keeps_the_users_files(tmp_path, monkeypatch):
    (tmp_path / "my_notes.txt").write_text("mine")
    run(tmp_path, monkeypatch)
    with pytest.raises(FileExistsError, match="pass --overwrite"):
        run(tmp_path, monkeypatch)
    run(tmp_path, monkeypatch, overwrite=True)
    assert (tmp_path / "my_notes.txt").read_text() == "mine"
    assert not (tmp_path / demo.PREVIOUS_DIR).exists()


def test_overwrite_refuses_folders_the_demo_did_not_write(tmp_path, monkeypatch):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_text("a user's photo")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="photos in .* were not written by dlss-demo"):
        run(tmp_path, monkeypatch, overwrite=True)
    assert snapshot(tmp_path) == before


def test_overwrite_refuses_a_users_file_added_to_a_demo_folder(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch)
    (tmp_path / "photos" / "holiday.jpg").write_text("a user's photo")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"photos/holiday\.jpg"):
        run(tmp_path, monkeypatch, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_failed_run_restores_the_previous_one(tmp_path, monkeypatch):
    run(tmp_path, monkeypatch)
    (tmp_path / "my_notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="total_steps"):
        run(tmp_path, monkeypatch, stages=failing_stages, overwrite=True)
    assert snapshot(tmp_path) == before


def test_a_failed_first_run_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    (tmp_path / "my_notes.txt").write_text("mine")
    with pytest.raises(ValueError):
        run(tmp_path, monkeypatch, stages=failing_stages)
    assert snapshot(tmp_path) == {"my_notes.txt": "mine"}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"patches_per_image": 0}, "run_demo.patches_per_image must be a positive integer"),
        ({"split_ratios": (float("nan"), 1, 1)}, "run_demo.split_ratios must be three finite"),
        ({"split_ratios": (0, 1, 1)}, "with train > 0"),
        ({"dataset_hr_size": 127}, "not divisible by run_demo.scale"),
    ],
)
def test_bad_settings_fail_before_anything_is_touched(tmp_path, monkeypatch, settings, message):
    run(tmp_path, monkeypatch)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=message):
        run(tmp_path, monkeypatch, overwrite=True, **settings)
    assert snapshot(tmp_path) == before


def test_cli_bad_setting_is_one_line_and_the_users_photos_survive(tmp_path, in_process):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_text("a user's photo")
    result = in_process("demo", f"--output_dir={tmp_path}", "--overwrite")
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dlss-demo: error: --overwrite refused: photos"), result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "photos" / "holiday.jpg").read_text() == "a user's photo"


def legacy_run(folder) -> None:
    """What a demo run wrote before it kept a record."""
    for name, photos in (
        ("photos", demo.TRAINING_PHOTOGRAPHS),
        ("held_out", demo.HELD_OUT_PHOTOGRAPHS),
    ):
        (folder / name).mkdir()
        for photo in photos:
            (folder / name / f"{photo}.png").write_text(photo)
    for name in ("dataset", "model", "evaluation"):
        (folder / name).mkdir()
    (folder / "report.md").write_text("# dlss_dist demo report\n")


def test_an_unrecorded_earlier_demo_run_is_recognised(tmp_path, monkeypatch):
    legacy_run(tmp_path)
    run(tmp_path, monkeypatch, overwrite=True)
    assert (tmp_path / "photos" / "written.txt").exists()


def test_an_unrecorded_run_with_a_users_photo_is_refused(tmp_path, monkeypatch):
    legacy_run(tmp_path)
    (tmp_path / "photos" / "holiday.jpg").write_text("a user's photo")
    with pytest.raises(ValueError, match="were not written by dlss-demo"):
        run(tmp_path, monkeypatch, overwrite=True)
    assert (tmp_path / "photos" / "holiday.jpg").exists()


def summary_with(model_psnr: float, bicubic_psnr: float = 27.0) -> dict:
    metrics = {
        "model": {"psnr_rgb": model_psnr, "ssim_rgb": 0.81, "psnr_y": 29.0, "ssim_y": 0.83},
        "bicubic": {"psnr_rgb": bicubic_psnr, "ssim_rgb": 0.80, "psnr_y": 28.5, "ssim_y": 0.82},
        "nearest": {"psnr_rgb": 25.4, "ssim_rgb": 0.72, "psnr_y": 26.9, "ssim_y": 0.74},
    }
    return {"num_images": 3, "scale": 4, "methods": list(metrics), "metrics": metrics}


@pytest.mark.parametrize(
    "model_psnr, says",
    [
        (27.8, "The model beats bicubic by 0.80 dB"),
        (27.1, "The model is 0.10 dB above bicubic"),
        (27.0, "The model scores as bicubic"),
        (26.5, "The model is 0.50 dB below bicubic"),
    ],
)
def test_the_table_says_what_its_numbers_mean(model_psnr, says):
    table = demo.explained_table(summary_with(model_psnr))
    assert says in table and demo.verdict(summary_with(model_psnr)) in table
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| method | what it is | PSNR (dB) | SSIM |"
    assert rows[1].startswith(f"| model | the network trained above | {model_psnr:.2f} | 0.810")
    assert "baseline to beat" in rows[2] and "the floor" in rows[3]
    assert "PSNR (peak signal-to-noise ratio)" in table and "SSIM (structural" in table
    assert "3 held-out photographs from copies 4x smaller" in table


def test_six_stages_from_photos_to_report():
    assert demo.STAGES == (
        "Photos",
        "Preprocessing",
        "Training",
        "Export",
        "Evaluation",
        "Report",
    )
    assert demo.stage_header(3) == "== 3/6 Training =="


def test_the_report_leads_with_the_explained_table(tmp_path):
    (tmp_path / "evaluation" / "grids").mkdir(parents=True)
    summary = summary_with(27.8)
    summary.update(
        model=str(tmp_path / "model" / "export" / "6"),
        degradation="bicubic_matlab_antialias",
        border_crop=4,
    )
    path = demo.write_report(str(tmp_path), summary, {"evaluation": 1.0}, 6)
    with open(path) as f:
        report = f.read()
    assert demo.explained_table(summary, picture="the comparison picture below") in report
    assert report.index("| what it is |") < report.index("| PSNR Y (dB) |")  # every metric after
