"""Upscaling videos frame by frame with PyAV (FFmpeg bundled in its wheel).

`upscale_video` streams: it decodes one frame, upscales it with the same function the still
images go through (tiling included), encodes it and lets it go, so memory depends on the
frame size and the encoder's few frames of look-ahead, never on the video's length. The
output is written to a hidden temporary file beside the target and renamed into place when
complete, so a video that fails half-way leaves nothing behind.

What is kept: the frame count and the frame rate (the input's average rate as an exact
fraction, e.g. 30000/1001; variable-rate inputs come out at that constant rate), and the
first audio stream, copied packet for packet when the output container can hold its codec
and re-encoded (AAC, or Opus for WebM) otherwise. What is not: subtitles, data streams,
chapters, rotation metadata. Video is encoded as H.264 (libx264, yuv420p) in MP4/MOV/MKV and
VP9 in WebM at the given CRF (default 18, visually near-lossless).

Paths are local files (FFmpeg opens them itself, not through tf.io.gfile).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from fractions import Fraction

import numpy as np
from absl import logging

from dlss_dist import files
from dlss_dist import progress as progress_lib

# Containers dlss-upscale reads when it finds them in a folder or is given one.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
# Containers it writes, with their video encoder; other inputs (.avi) become .mp4.
_ENCODERS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".webm": "libvpx-vp9",
}
# Audio codecs each container takes as they are (the rest are re-encoded).
_AUDIO_COPYABLE = {
    ".mp4": {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"},
    ".m4v": {"aac", "mp3", "ac3", "eac3", "alac"},
    ".mov": {"aac", "mp3", "ac3", "eac3", "alac", "pcm_s16le", "pcm_s24le"},
    ".mkv": None,  # Matroska holds any codec
    ".webm": {"opus", "vorbis"},
}
WRITABLE_VIDEO_EXTENSIONS = tuple(_ENCODERS)
DEFAULT_CRF = 18

# HxWx3 uint8 -> (sH)x(sW)x3 uint8
FrameUpscaleFn = Callable[[np.ndarray], np.ndarray]


class VideoError(ValueError):
    """A video that cannot be read or written; `reason` is a short machine-readable tag.

    Messages do not repeat the file name: failure lists show it beside them.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def is_video(path: str) -> bool:
    """True if `path` has a video container's extension."""
    return path.lower().endswith(VIDEO_EXTENSIONS)


def is_writable_video(path: str) -> bool:
    """True if `path` has the extension of a container `upscale_video` can write."""
    return path.lower().endswith(WRITABLE_VIDEO_EXTENSIONS)


def frame_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """(width, height) of an output frame: exact for an integer scale, else rounded to even
    numbers (the yuv420p frames every player decodes need even sides)."""
    if float(scale).is_integer():
        return width * int(scale), height * int(scale)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


def output_name(path: str) -> str:
    """The file name a video input gets in an output folder: same name, .mp4 if not writable."""
    stem, ext = os.path.splitext(os.path.basename(path))
    return stem + (ext if ext.lower() in _ENCODERS else ".mp4")


@dataclasses.dataclass
class VideoInfo:
    """What `probe` finds: frame size, exact frame rate, frame count (if the container
    says), duration in seconds (if known) and the audio codec (None without audio)."""

    width: int
    height: int
    fps: Fraction
    frames: int | None
    duration: float | None
    audio_codec: str | None


@dataclasses.dataclass
class VideoResult:
    """What `upscale_video` wrote."""

    output: str
    frames: int
    width: int
    height: int
    fps: Fraction
    audio: str | None  # "copied <codec>", "re-encoded <codec> as <codec>", or None


def _describe(error) -> str:
    """FFmpeg's own description of an error, without the errno and path PyAV adds."""
    return getattr(error, "strerror", None) or str(error)


def _import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError(f"video needs PyAV: pip install 'dlss_dist[video]' ({error})") from error
    return av


def _open_input(path: str):
    av = _import_av()
    if not os.path.isfile(path):
        raise VideoError("not_found", "no such file")
    try:
        container = av.open(path)
    except av.FFmpegError as error:
        raise VideoError(
            "unreadable_video", f"not a readable video ({_describe(error)})"
        ) from error
    if not container.streams.video:
        container.close()
        raise VideoError("no_video_stream", "the file has no video stream")
    return container


def _frame_rate(stream, path: str) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoError("no_frame_rate", "the video stream has no frame rate")
    return Fraction(rate)


def probe(path: str) -> VideoInfo:
    """Reads a video's header. Raises VideoError when it is not a readable video."""
    with _open_input(path) as container:
        stream = container.streams.video[0]
        audio = container.streams.audio
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000  # AV_TIME_BASE
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=_frame_rate(stream, path),
            frames=stream.frames or None,
            duration=duration,
            audio_codec=audio[0].codec_context.name if audio else None,
        )


def upscale_video(
    upscale_frame: FrameUpscaleFn,
    input_path: str,
    output_path: str,
    *,
    scale: float,
    crf: int = DEFAULT_CRF,
    progress: bool = False,
) -> VideoResult:
    """Upscales every frame of `input_path` into `output_path`, streaming (module docstring).

    Args:
      upscale_frame: HxWx3 uint8 RGB -> an RGB frame of `frame_size` (scale*H x scale*W for
        an integer scale), e.g. a `dlss_dist.serving.Upscaler` with its tiling arguments bound.
      input_path: a video file FFmpeg can decode.
      output_path: the video to write; its extension picks the container (.mp4, .m4v,
        .mov, .mkv: H.264; .webm: VP9).
      scale: the upscaling factor of `upscale_frame` (sets the encoder's frame size, see
        `frame_size`).
      crf: encoder constant rate factor (0 = lossless H.264, larger = smaller files).
      progress: report progress over the frames (`dlss_dist.progress`: a bar on a terminal,
        lines with the rate and the time left when piped).

    Returns:
      A VideoResult.

    Raises:
      VideoError: the input is not a readable video, a frame cannot be decoded, or the
        output container is not one of the writable ones. Nothing is left at `output_path`.
    """
    av = _import_av()
    ext = os.path.splitext(output_path)[1].lower()
    if ext not in _ENCODERS:
        raise VideoError(
            "unsupported_output",
            f"cannot write {ext or 'extension-less'} videos ({output_path}); "
            f"use one of {sorted(_ENCODERS)}",
        )
    info = probe(input_path)
    try:
        # The real extension last: FFmpeg picks the container from it.
        with files.staged_file(os.path.abspath(output_path), keep_extension=True) as temp:
            result = _transcode(
                av,
                upscale_frame,
                input_path,
                temp,
                ext,
                info,
                scale=scale,
                crf=crf,
                progress=progress,
            )
    except av.FFmpegError as error:
        raise VideoError("video_error", _describe(error)) from error
    result.output = output_path
    return result


def _transcode(av, upscale_frame, input_path, temp, ext, info, *, scale, crf, progress):
    """Decode -> upscale -> encode, one frame at a time, audio muxed alongside."""
    with _open_input(input_path) as source, av.open(temp, mode="w") as target:
        video_in = source.streams.video[0]
        video_in.thread_type = "AUTO"  # decode with FFmpeg's threads; frames still come in order
        width, height = frame_size(info.width, info.height, scale)
        video_out = target.add_stream(_ENCODERS[ext], rate=info.fps)
        video_out.width, video_out.height = width, height
        video_out.pix_fmt = "yuv420p"  # what every player decodes
        video_out.options = {"crf": str(crf)}
        if _ENCODERS[ext] == "libvpx-vp9":
            video_out.options["b"] = "0"  # VP9 is constant-quality only with a zero bitrate

        audio_in = source.streams.audio[0] if source.streams.audio else None
        audio_out, audio_note, copy_audio = None, None, False
        if audio_in is not None:
            codec = audio_in.codec_context.name
            copyable = _AUDIO_COPYABLE[ext]
            copy_audio = copyable is None or codec in copyable
            if copy_audio:
                audio_out = target.add_stream_from_template(audio_in)
                audio_note = f"copied {codec}"
            else:
                encoder = "libopus" if ext == ".webm" else "aac"
                audio_out = target.add_stream(encoder, rate=audio_in.codec_context.sample_rate)
                audio_note = f"re-encoded {codec} as {audio_out.codec_context.name}"

        streams = [video_in] + ([audio_in] if audio_in is not None else [])
        frames = 0
        total = info.frames or (round(info.duration * info.fps) if info.duration else None)
        description = os.path.basename(input_path)
        with progress_lib.Progress(total, description, unit="frame", enabled=progress) as bar:
            for packet in source.demux(streams):
                if packet.stream is audio_in:
                    if copy_audio:
                        if packet.dts is None:  # a demuxer's flush packet: nothing to copy
                            continue
                        packet.stream = audio_out
                        target.mux(packet)
                    else:
                        for frame in packet.decode():
                            frame.pts = None  # let the encoder count samples itself
                            target.mux(audio_out.encode(frame))
                    continue
                try:
                    decoded = packet.decode()
                except av.FFmpegError as error:
                    raise VideoError(
                        "decode_error",
                        f"frame {frames + 1} cannot be decoded ({_describe(error)})",
                    ) from error
                for frame in decoded:
                    sr = upscale_frame(frame.to_ndarray(format="rgb24"))
                    if sr.shape != (height, width, 3):
                        raise ValueError(
                            f"upscale_frame returned {sr.shape}, expected {(height, width, 3)}"
                        )
                    out = av.VideoFrame.from_ndarray(np.ascontiguousarray(sr), format="rgb24")
                    target.mux(video_out.encode(out))
                    frames += 1
                    bar.update(1)
            target.mux(video_out.encode(None))  # flush the encoder's look-ahead
            if audio_out is not None and not copy_audio:
                target.mux(audio_out.encode(None))
    if frames == 0:
        raise VideoError("no_frames", "no frame could be decoded")
    logging.info(
        "Upscaled %s: %d frames at %s fps to %dx%d", input_path, frames, info.fps, width, height
    )
    return VideoResult(
        output=temp, frames=frames, width=width, height=height, fps=info.fps, audio=audio_note
    )
