"""Videos through dlss-upscale: frame count, size, frame rate, audio, errors, streaming.

The clips are made here with PyAV: a window sliding across a photograph, so every frame
differs from its neighbours and a dropped, repeated or reordered frame would show.
"""

import os
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import load_photo
from test_export import SCALE, tiny_generator

from dlss_dist import export, serving, upscale, video

NTSC = Fraction(30000, 1001)  # a rate that only survives if it is kept as a fraction
HEIGHT, WIDTH = 32, 48


def moving_frames(count: int, height: int = HEIGHT, width: int = WIDTH) -> list[np.ndarray]:
    """`count` frames of a window moving 3 px right and 1 px down per frame over a photo."""
    photo = load_photo("astronaut")
    return [
        np.ascontiguousarray(photo[40 + i : 40 + i + height, 150 + 3 * i : 150 + 3 * i + width])
        for i in range(count)
    ]


def make_video(path, frames, *, fps=NTSC, audio_codec=None, crf=10) -> str:
    """Writes H.264 frames (and a 440 Hz tone in `audio_codec`, as long as the video)."""
    path = str(path)
    height, width = frames[0].shape[:2]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf)}
        audio = container.add_stream(audio_codec, rate=16000) if audio_codec else None
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode(None))
        if audio is not None:
            t = np.arange(int(16000 * len(frames) / fps)) / 16000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            samples = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            samples.sample_rate = 16000
            container.mux(audio.encode(samples))
            container.mux(audio.encode(None))
    return path


def decode(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def audio_stream(path):
    """(codec name, duration in seconds) of a file's first audio stream, or None."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.dts is not None]
        end = max(float((p.pts + p.duration) * p.time_base) for p in packets)
        start = min(float(p.pts * p.time_base) for p in packets)
        return stream.codec_context.name, end - start


def psnr(a, b) -> float:
    mse = np.mean((a.astype(float) - b) ** 2)
    return 10 * np.log10(255**2 / max(mse, 1e-10))


@pytest.fixture(scope="module")
def upscaler(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("video_model") / "1")
    export.export_generator(tiny_generator(seed=7), path, scale=SCALE)
    return serving.load_upscaler(path)


@pytest.mark.parametrize("tile", [0, 20])
def test_each_output_frame_is_the_still_image_result(upscaler, tmp_path, tile):
    clip = make_video(tmp_path / "clip.mp4", moving_frames(7))
    result = video.upscale_video(
        lambda frame: upscaler(frame, tile=tile, tile_overlap=4),
        clip,
        str(tmp_path / "clip_x2.mp4"),
        scale=SCALE,
    )
    info = video.probe(result.output)
    assert (result.frames, info.frames) == (7, 7)
    assert (info.width, info.height) == (WIDTH * SCALE, HEIGHT * SCALE)
    assert info.fps == NTSC and result.fps == NTSC
    assert info.audio_codec is None and result.audio is None

    # The still-image path on the same decoded input frames.
    stills = [upscaler(frame) for frame in decode(clip)]
    outputs = decode(result.output)
    assert len(outputs) == len(stills)
    for index, output in enumerate(outputs):
        scores = [psnr(output, still) for still in stills]
        # Within codec tolerance of its own frame (H.264 at CRF 18 with 4:2:0 chroma) ...
        assert scores[index] > 33, (index, scores[index])
        # ... and clearly that frame, not a neighbour: nothing dropped, repeated or reordered.
        assert int(np.argmax(scores)) == index, (index, scores)


def test_audio_is_copied_when_the_container_takes_it(upscaler, tmp_path):
    clip = make_video(tmp_path / "talk.mp4", moving_frames(6), audio_codec="aac")
    result = video.upscale_video(upscaler, clip, str(tmp_path / "out" / "talk.mp4"), scale=SCALE)
    assert result.audio == "copied aac"
    codec, seconds = audio_stream(result.output)
    source_codec, source_seconds = audio_stream(clip)
    assert codec == source_codec == "aac"
    assert seconds == pytest.approx(source_seconds, abs=0.03)


def test_audio_is_reencoded_when_the_container_cannot_take_it(upscaler, tmp_path):
    clip = make_video(tmp_path / "raw.mkv", moving_frames(6), audio_codec="pcm_s16le")
    result = video.upscale_video(upscaler, clip, str(tmp_path / "raw.mp4"), scale=SCALE)
    assert result.audio == "re-encoded pcm_s16le as aac"
    codec, seconds = audio_stream(result.output)
    assert codec == "aac"
    assert seconds == pytest.approx(6 / NTSC, abs=0.1)  # AAC pads by up to one 1024-sample frame
    assert video.probe(result.output).frames == 6


def test_memory_does_not_grow_with_the_length(tmp_path):
    """Python-side allocations (decoded and upscaled frames) peak the same for 20 or 200 frames."""

    def peak(count: int) -> int:
        clip = make_video(tmp_path / f"{count}.mp4", moving_frames(4, 64, 64) * (count // 4))
        tracemalloc.start()
        video.upscale_video(
            lambda f: np.repeat(np.repeat(f, 2, 0), 2, 1),
            clip,
            str(tmp_path / f"{count}_x2.mp4"),
            scale=2,
        )
        _, high_water = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high_water

    peak(8)  # first-call allocations (imports, codec set-up) out of the comparison
    short, long = peak(20), peak(200)
    # Keeping every frame would add 180 * (12 + 48) KiB = 10.5 MiB for the long clip.
    assert long < short + 2 * 2**20, (short, long)


def test_folder_of_videos_lists_broken_ones_with_the_other_failures(upscaler, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    make_video(folder / "a_clip.mp4", moving_frames(5))
    (folder / "b_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    truncated = make_video(tmp_path / "whole.mp4", moving_frames(5))
    (folder / "c_truncated.mov").write_bytes(Path(truncated).read_bytes()[:400])
    (folder / "d_text.mkv").write_text("not a video")
    (folder / "e_photo.png").write_bytes(b"")  # images keep failing the way they did
    with av.open(str(folder / "f_audio_only.mkv"), "w") as container:
        audio = container.add_stream("pcm_s16le", rate=8000)
        tone = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        tone.sample_rate = 8000
        container.mux(audio.encode(tone))
        container.mux(audio.encode(None))
    output_dir = tmp_path / "out"
    result = upscale.upscale_files(upscaler, [str(folder)], str(output_dir))

    assert result.videos == [str(output_dir / "a_clip.mp4")]
    assert video.probe(result.videos[0]).frames == 5
    failed = {os.path.basename(f["input"]): f["reason"] for f in result.failures}
    assert set(failed) == {
        "b_broken.mp4",
        "c_truncated.mov",
        "d_text.mkv",
        "e_photo.png",
        "f_audio_only.mkv",
    }
    assert failed["f_audio_only.mkv"] == "no_video_stream"
    assert failed["b_broken.mp4"] == failed["d_text.mkv"] == "unreadable_video"
    messages = {os.path.basename(f["input"]): f["message"] for f in result.failures}
    assert messages["b_broken.mp4"].startswith("not a readable video (Invalid data")
    # A failed video leaves no partial or temporary file behind.
    assert sorted(os.listdir(output_dir)) == ["a_clip.mp4", upscale.FAILURES_FILE]


def test_errors_name_the_problem(tmp_path):
    clip = make_video(tmp_path / "clip.mp4", moving_frames(3))
    with pytest.raises(video.VideoError, match="cannot write .avi"):
        video.upscale_video(lambda f: f, clip, str(tmp_path / "out.avi"), scale=1)
    with pytest.raises(video.VideoError, match="no such file") as error:
        video.probe(str(tmp_path / "missing.mp4"))
    assert error.value.reason == "not_found"
    # An upscaler that breaks its contract is caught, and the half-written file is removed.
    with pytest.raises(ValueError, match="expected"):
        video.upscale_video(lambda f: f, clip, str(tmp_path / "same.mp4"), scale=2)
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


@pytest.mark.slow
def test_cli_upscales_one_video_to_a_file(upscaler, tmp_path, in_process):
    clip = make_video(tmp_path / "clip.mp4", moving_frames(4), audio_codec="aac")
    args = [f"--model={upscaler.path}", "--tile=24", "--tile_overlap=4"]
    result = in_process("upscale", *args, f"--input={clip}", f"--output={tmp_path / 'clip_x2.mp4'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4 frames, 96x64 at 29.970 fps, audio copied aac" in result.stdout
    assert video.probe(str(tmp_path / "clip_x2.mp4")).frames == 4

    (tmp_path / "bad.mp4").write_text("not a video")
    result = in_process(
        "upscale", *args, f"--input={tmp_path / 'bad.mp4'}", f"--output={tmp_path / 'bad_x2.mp4'}"
    )
    assert result.returncode == 1
    assert "bad.mp4: [unreadable_video] not a readable video" in result.stderr
