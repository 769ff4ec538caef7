"""AV-Fashion: real Fashion-MNIST images paired with a *synthesised* spoken class name (offline).

No real audio-visual data set is installable offline (``shared/spec/data.md`` §5), so the second modality is
built reproducibly from installable parts, in the spirit of AV-MNIST (Vielzeuf et al., "CentralNet: a
Multilayer Approach for Multimodal Fusion", ECCV-W 2018, which paired MNIST images with spoken digits):

* **image**: a real Fashion-MNIST image (Debian ``dataset-fashion-mnist``, read by
  :func:`molearn.datasets.load_fashion_mnist`), scaled to ``[0, 1]``, shape ``(1, 28, 28)``.
* **audio**: the spoken name of the image's class (:data:`CLASS_WORDS`), **synthesised** by the Debian
  ``espeak-ng`` formant synthesiser. Per split, a fixed *bank* of ``n_utterances`` renderings per class is
  made
  once, each with a random English voice (:data:`VOICES`), a male/female voice variant (:data:`VARIANTS`),
  speaking rate and pitch (:data:`RATE_RANGE`, :data:`PITCH_RANGE`; the train and test banks are drawn with
  different seeds). Each rendering is trimmed of leading/trailing silence, resampled to 16 kHz (windowed-sinc)
  and scaled to unit RMS; the bank is cached under ``$MOLEARN_CACHE/av_fashion`` (else
  ``~/.cache/molearn/av_fashion``) in a file named by a fingerprint of the recipe, and re-rendered when the
  recipe changes.
* **pairing** (seeded by ``seed``): each image gets a random utterance of its own class from its split's
  bank, placed at a random offset in a 1.292 s clip (random time shift), plus white Gaussian noise at
  ``noise`` dB SNR (relative to the utterance's power), then turned into a log-mel spectrogram.
* **log-mel** (pure torch): STFT with a 25 ms Hann window (400 samples, zero-padded to 512), 20 ms hop,
  no centring, power spectrum, 40 triangular mel filters on the HTK mel scale ``m = 2595 log10(1 + f/700)``
  from 0 to 8 kHz (no area normalisation), ``log(mel + 1e-6)``, then each clip standardised to zero mean and
  unit variance over all its bins. 64 frames: ``audio`` is ``(40, 64)``.

The defaults (notably :data:`DEFAULT_SNR_DB`) are molearn's choice, made so that the two modalities are
imbalanced (measured in ``experiments/mimo/``): at -10 dB the image is learnt much faster and
under joint training the audio branch stays far below what audio alone reaches; at 0 dB the audio is the
stronger modality after a few epochs.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ._idx import load_fashion_mnist
from ._multi import cache_dir

__all__ = [
    "CLASS_WORDS",
    "DEFAULT_SNR_DB",
    "AVData",
    "EspeakNotFoundError",
    "WavError",
    "av_cache_dir",
    "bank_fingerprint",
    "load_av_fashion",
    "log_mel",
    "mel_filterbank",
    "parse_wav",
    "render_bank",
    "resample",
    "synthesize",
    "wav_bytes",
]

#: the words spoken for classes 0..9 (Fashion-MNIST's class order)
CLASS_WORDS = (
    "T-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
#: espeak-ng's own English voices (Debian ``espeak-ng-data``; the MBROLA ones need extra packages)
VOICES = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-gbclan",
    "en-gb-x-rp",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
#: espeak-ng voice variants: male m1..m7, female f1..f5
VARIANTS = tuple(f"m{i}" for i in range(1, 8)) + tuple(f"f{i}" for i in range(1, 6))
RATE_RANGE = (140, 220)  # words per minute (espeak-ng default 175)
PITCH_RANGE = (20, 80)  # espeak-ng pitch 0..99 (default 50)
SAMPLE_RATE = 16_000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 320  # 20 ms
N_MELS = 40
N_FRAMES = 64
CLIP_SAMPLES = N_FFT + (N_FRAMES - 1) * HOP_LENGTH  # 20,672 samples = 1.292 s -> exactly N_FRAMES frames
DEFAULT_UTTERANCES = 64  # per class and split
#: default SNR (dB) of the white noise added to every clip; measured choice (experiments/mimo/)
DEFAULT_SNR_DB = -10.0
_BANK_SEEDS = {"train": 1_000, "test": 2_000}
_SPLIT_OFFSET = {"train": 0, "test": 7_919}
_TRIM_DB = -40.0  # silence threshold relative to the loudest 10 ms frame
_BANK_FORMAT = 2
ENV_ESPEAK = "MOLEARN_ESPEAK"


class WavError(ValueError):
    """Bytes that are not a readable RIFF/WAVE file (the message says why)."""


class EspeakNotFoundError(RuntimeError):
    """``espeak-ng`` is needed to render the utterance bank and is not installed."""


# ----------------------------------------------------------------------------------------------- WAV
def parse_wav(data: bytes) -> tuple[Tensor, int]:
    """Decode a RIFF/WAVE file into ``(mono float32 waveform in [-1, 1], sample rate)``.

    PCM 8-bit (unsigned), 16/32-bit (signed) and IEEE float32 are read; several channels are averaged. A
    ``data`` chunk whose size overruns the file (``espeak-ng --stdout`` writes a placeholder size because it
    streams) is read up to the end of the file.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError(f"not a RIFF/WAVE file (starts with {data[:12]!r})")
    pos, fmt, payload = 12, None, None
    while pos + 8 <= len(data):
        cid, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            if len(body) < 16:
                raise WavError(f"fmt chunk too short ({len(body)} bytes, 16 needed)")
            fmt = struct.unpack("<HHIIHH", body[:16])
            if fmt[0] == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                fmt = (struct.unpack("<H", body[24:26])[0], *fmt[1:])
        elif cid == b"data":
            payload = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None:
        raise WavError("no fmt chunk before the data chunk")
    if payload is None:
        raise WavError("no data chunk")
    tag, channels, rate, _, _, bits = fmt
    if channels < 1 or rate < 1:
        raise WavError(f"bad fmt chunk: {channels} channels, {rate} Hz")
    kinds = {
        (1, 8): (torch.uint8, 1),
        (1, 16): (torch.int16, 2),
        (1, 32): (torch.int32, 4),
        (3, 32): (torch.float32, 4),
    }
    if (tag, bits) not in kinds:
        raise WavError(
            f"unsupported WAV encoding: format tag {tag}, {bits} bits (PCM 8/16/32 or float32 only)"
        )
    dtype, width = kinds[(tag, bits)]
    frame = width * channels
    usable = len(payload) - len(payload) % frame
    if usable == 0:
        return torch.zeros(0), rate
    raw = torch.frombuffer(bytearray(payload[:usable]), dtype=dtype)
    if struct.pack("=H", 1) != struct.pack("<H", 1) and width > 1:  # big-endian host
        raw = raw.view(torch.uint8).view(-1, width).flip(-1).contiguous().view(dtype).reshape(-1)
    x = raw.to(torch.float32)
    if dtype == torch.uint8:
        x = (x - 128.0) / 128.0
    elif dtype == torch.int16:
        x = x / 32768.0
    elif dtype == torch.int32:
        x = x / 2147483648.0
    return x.view(-1, channels).mean(dim=1), rate


def wav_bytes(wave: Tensor, sample_rate: int) -> bytes:
    """Encode a mono waveform in [-1, 1] as a 16-bit PCM WAV file (for fixtures and inspection)."""
    x = torch.as_tensor(wave, dtype=torch.float32).reshape(-1).clamp(-1.0, 32767 / 32768)
    pcm = (x * 32768.0).round().to(torch.int16)
    body = struct.pack(f"<{pcm.numel()}h", *pcm.tolist())
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    chunks = b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


# ------------------------------------------------------------------------------------ signal processing
def resample(wave: Tensor, orig_rate: int, new_rate: int, *, zeros: int = 16) -> Tensor:
    """Band-limited resampling of a 1-D waveform by windowed-sinc interpolation.

    ``y[j] = sum_k x[k] h(j * orig/new - k)`` with ``h(u) = (2 f_c/orig) sinc(2 f_c u/orig) w(u)``, cut-off
    ``f_c = 0.95 min(orig, new) / 2`` and a Hann window ``w`` spanning ``zeros`` zero crossings each side.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_rate} and {new_rate}")
    x = torch.as_tensor(wave, dtype=torch.float32).reshape(-1)
    if orig_rate == new_rate or x.numel() == 0:
        return x.clone()
    n_out = math.floor(x.numel() * new_rate / orig_rate)
    cutoff = 0.95 * 0.5 * min(orig_rate, new_rate) / orig_rate  # in cycles per input sample
    half = math.ceil(zeros / (2 * cutoff))
    pos = torch.arange(n_out, dtype=torch.float64) * (orig_rate / new_rate)
    base = pos.floor().to(torch.int64)
    taps = base[:, None] + torch.arange(-half + 1, half + 1)[None, :]
    u = (pos[:, None] - taps.to(torch.float64)).to(torch.float32)
    win = torch.where(u.abs() < half, 0.5 + 0.5 * torch.cos(math.pi * u / half), torch.zeros(()))
    h = 2 * cutoff * torch.sinc(2 * cutoff * u) * win
    valid = (taps >= 0) & (taps < x.numel())
    vals = x[taps.clamp(0, x.numel() - 1)] * valid
    return (vals * h).sum(dim=1)


def _hz_to_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(
    n_mels: int = N_MELS,
    n_fft: int = N_FFT,
    sample_rate: int = SAMPLE_RATE,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """Triangular mel filters ``(n_mels, n_fft // 2 + 1)`` on the HTK mel scale ``2595 log10(1 + f / 700)``.

    Filter ``i`` rises linearly from centre ``i - 1`` to centre ``i`` (value 1) and falls to centre ``i + 1``;
    the ``n_mels + 2`` edges are equally spaced in mel between ``f_min`` and ``f_max`` (default Nyquist).
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= {sample_rate / 2}, got f_min={f_min}, f_max={f_max}")
    if n_mels < 1 or n_fft < 2:
        raise ValueError(f"n_mels and n_fft must be >= 1 and >= 2, got {n_mels}, {n_fft}")
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(
        torch.linspace(
            _hz_to_mel(torch.tensor(f_min)), _hz_to_mel(torch.tensor(f_max)), n_mels + 2, dtype=torch.float64
        )
    )
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None, :] - lo) / (mid - lo)
    down = (hi - freqs[None, :]) / (hi - mid)
    return torch.clamp(torch.minimum(up, down), min=0.0).to(torch.float32)


def log_mel(
    waves: Tensor, *, sample_rate: int = SAMPLE_RATE, n_mels: int = N_MELS, standardize: bool = True
) -> Tensor:
    """Log-mel spectrograms ``(B, n_mels, T)`` of waveforms ``(B, L)`` (or ``(L,)`` -> ``(n_mels, T)``).

    STFT (Hann window of :data:`WIN_LENGTH` samples zero-padded to :data:`N_FFT`, hop :data:`HOP_LENGTH`, no
    centring; ``T = 1 + (L - N_FFT) // HOP_LENGTH``), power, :func:`mel_filterbank`, ``log(. + 1e-6)``; with
    ``standardize`` each clip is shifted and scaled to zero mean and unit variance over all its bins.
    """
    x = torch.as_tensor(waves, dtype=torch.float32)
    single = x.dim() == 1
    if single:
        x = x[None]
    if x.dim() != 2:
        raise ValueError(f"waves must be (L,) or (B, L), got shape {tuple(x.shape)}")
    if x.shape[1] < N_FFT:
        raise ValueError(f"waveforms need at least {N_FFT} samples, got {x.shape[1]}")
    spec = torch.stft(
        x, N_FFT, HOP_LENGTH, WIN_LENGTH, torch.hann_window(WIN_LENGTH), center=False, return_complex=True
    )
    power = torch.view_as_real(spec).square().sum(-1)  # (B, F, T)
    mel = torch.log(torch.matmul(mel_filterbank(n_mels, N_FFT, sample_rate), power) + 1e-6)
    if standardize:
        mel = (mel - mel.mean(dim=(1, 2), keepdim=True)) / mel.std(dim=(1, 2), keepdim=True).clamp_min(1e-5)
    return mel[0] if single else mel


def _trim(x: Tensor, rate: int) -> Tensor:
    """Cut leading/trailing 10 ms frames quieter than :data:`_TRIM_DB` below the loudest one."""
    hop = max(1, rate // 100)
    n = x.numel() // hop
    if n == 0:
        return x
    energy = x[: n * hop].view(n, hop).square().mean(dim=1)
    keep = (energy > energy.max() * 10 ** (_TRIM_DB / 10)).nonzero().flatten()
    if keep.numel() == 0:
        return x
    return x[int(keep[0]) * hop : (int(keep[-1]) + 1) * hop]


# -------------------------------------------------------------------------------------------- espeak
def _espeak() -> str:
    exe = os.environ.get(ENV_ESPEAK) or shutil.which("espeak-ng")
    if not exe:
        raise EspeakNotFoundError(
            "AV-Fashion synthesises its audio with espeak-ng, which is not installed: run "
            "`apt-get install espeak-ng` (Debian/Ubuntu), or point $MOLEARN_ESPEAK at the espeak-ng binary. "
            "A bank rendered once is cached and then needs no espeak-ng."
        )
    return exe


def synthesize(text: str, *, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> tuple[Tensor, int]:
    """Render ``text`` with ``espeak-ng -v voice -s rate -p pitch --stdout``: ``(waveform, sample rate)``."""
    exe = _espeak()
    cmd = [exe, "-v", voice, "-s", str(int(rate)), "-p", str(int(pitch)), "--stdout", text]
    proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(
            f"{' '.join(cmd)} failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')}"
        )
    return parse_wav(proc.stdout)


def _bank_recipe(split: str, n_utterances: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(_BANK_SEEDS[split])
    items = []
    for c, word in enumerate(CLASS_WORDS):
        for _ in range(n_utterances):
            v = VOICES[int(torch.randint(len(VOICES), (1,), generator=g))]
            var = VARIANTS[int(torch.randint(len(VARIANTS), (1,), generator=g))]
            rate = int(torch.randint(RATE_RANGE[0], RATE_RANGE[1] + 1, (1,), generator=g))
            pitch = int(torch.randint(PITCH_RANGE[0], PITCH_RANGE[1] + 1, (1,), generator=g))
            items.append({"label": c, "text": word, "voice": f"{v}+{var}", "rate": rate, "pitch": pitch})
    return {
        "format": _BANK_FORMAT,
        "split": split,
        "sample_rate": SAMPLE_RATE,
        "trim_db": _TRIM_DB,
        "items": items,
    }


def bank_fingerprint(recipe: dict[str, Any]) -> str:
    """SHA-256 of the bank recipe (texts, voices, rates, pitches, rate, format); names the cache file."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def av_cache_dir(cache: str | os.PathLike[str] | None = None) -> Path:
    """``cache``, else ``$MOLEARN_CACHE/av_fashion``, else ``~/.cache/molearn/av_fashion``."""
    return Path(cache) if cache is not None else cache_dir() / "av_fashion"


def _render_one(item: dict[str, Any]) -> Tensor:
    wave, rate = synthesize(item["text"], voice=item["voice"], rate=item["rate"], pitch=item["pitch"])
    x = resample(_trim(wave, rate), rate, SAMPLE_RATE)
    return x / x.square().mean().sqrt().clamp_min(1e-8)


def render_bank(
    split: str = "train",
    *,
    n_utterances: int = DEFAULT_UTTERANCES,
    cache: str | os.PathLike[str] | None = None,
    workers: int = 4,
) -> dict[str, Any]:
    """The split's utterance bank: ``{"waves": (n, L) float32 zero-padded, "lengths": (n,), "labels": (n,),
    "recipe", "fingerprint"}``, loaded from the cache or rendered with espeak-ng (then cached).

    A cache file is used only if its stored fingerprint matches the recipe's; otherwise the bank is rendered
    again (``n_utterances`` per class, ``workers`` espeak-ng processes at a time).
    """
    if split not in _BANK_SEEDS:
        raise ValueError(f"split must be one of {sorted(_BANK_SEEDS)}, got {split!r}")
    if not isinstance(n_utterances, int) or n_utterances < 1:
        raise ValueError(f"n_utterances must be a positive int, got {n_utterances!r}")
    recipe = _bank_recipe(split, n_utterances)
    fp = bank_fingerprint(recipe)
    path = av_cache_dir(cache) / f"bank-{split}-{n_utterances}-{fp[:16]}.pt"
    if path.is_file():
        try:
            bank = torch.load(path, map_location="cpu", weights_only=True)
            if bank.get("fingerprint") == fp and bank["waves"].shape[0] == len(recipe["items"]):
                bank["waves"] = bank["waves"].to(torch.float32) / 32767.0 * bank["scale"]
                bank["recipe"] = recipe
                return bank
        except Exception:  # a corrupt cache file is rendered again
            pass
    _espeak()  # fail early with the install hint
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        waves = list(pool.map(_render_one, recipe["items"]))
    lengths = torch.tensor([w.numel() for w in waves], dtype=torch.int64)
    padded = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):
        padded[i, : w.numel()] = w
    labels = torch.tensor([it["label"] for it in recipe["items"]], dtype=torch.int64)
    scale = float(padded.abs().max().clamp_min(1e-8))
    stored = {
        "fingerprint": fp,
        "waves": (padded / scale * 32767.0).round().to(torch.int16),
        "scale": scale,
        "lengths": lengths,
        "labels": labels,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(stored, tmp)
    os.replace(tmp, path)
    # return what a later call reads back from the cache (int16-quantised), so both give the same data
    stored["waves"] = stored["waves"].to(torch.float32) / 32767.0 * scale
    stored["recipe"] = recipe
    return stored


# ------------------------------------------------------------------------------------------- data set
@dataclass
class AVData(Dataset):
    """An AV-Fashion split; ``data[i]`` is ``(image (1, 28, 28), audio (n_mels, T), label)``.

    ``utterance[i]`` is the index into the split's bank of the clip paired with image ``i``; ``index[i]``
    the image's index in the Fashion-MNIST split.
    """

    image: Tensor
    audio: Tensor
    label: Tensor
    class_names: tuple[str, ...] = CLASS_WORDS
    utterance: Tensor | None = None
    index: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.label.shape[0]
        if self.image.shape[0] != n or self.audio.shape[0] != n:
            raise ValueError(
                f"image, audio and label must have the same length, got {self.image.shape[0]}, "
                f"{self.audio.shape[0]}, {n}"
            )

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.image[i], self.audio[i], self.label[i]


def _mix(bank: dict[str, Any], utt: Tensor, gen: torch.Generator, noise: float | None) -> Tensor:
    """Clips (n, CLIP_SAMPLES): each utterance at a random offset, plus white noise (``noise`` dB SNR)."""
    n = utt.numel()
    lengths = bank["lengths"][utt].clamp_max(CLIP_SAMPLES)
    room = CLIP_SAMPLES - lengths
    offset = (torch.rand(n, generator=gen) * (room + 1).to(torch.float32)).floor().to(torch.int64)
    clip = torch.zeros(n, CLIP_SAMPLES)
    waves = bank["waves"]
    for r, (u, o, ln) in enumerate(zip(utt.tolist(), offset.tolist(), lengths.tolist())):
        clip[r, o : o + ln] = waves[u, :ln]
    if noise is not None:
        power = clip.square().sum(dim=1) / lengths.to(torch.float32)  # the utterance's own power (~1)
        eps = torch.randn(n, CLIP_SAMPLES, generator=gen)
        clip = clip + eps * (power / 10 ** (noise / 10)).sqrt()[:, None]
    return clip


def _load_features(path: Path, key: str, n: int) -> Tensor | None:
    if not path.is_file():
        return None
    try:
        stored = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a corrupt cache file is computed again
        return None
    audio = stored.get("audio") if isinstance(stored, dict) else None
    if stored.get("key") != key or audio is None or tuple(audio.shape) != (n, N_MELS, N_FRAMES):
        return None
    return audio


def load_av_fashion(
    split: str = "train",
    *,
    n_per_class: int | None = None,
    root: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    seed: int = 0,
    noise: float | None = DEFAULT_SNR_DB,
    n_utterances: int = DEFAULT_UTTERANCES,
    cache_features: bool = True,
    chunk: int = 2048,
) -> AVData:
    """AV-Fashion ``split`` (see the module docstring for how it is built).

    Args:
        split: ``"train"`` (60,000 Fashion-MNIST images, train bank) or ``"test"`` (10,000, test bank).
        n_per_class: a seeded class-balanced subset of that many images per class (in Fashion-MNIST order);
            ``None`` keeps all.
        root: the Fashion-MNIST folder (see :func:`molearn.datasets.load_fashion_mnist`).
        cache: the bank's cache folder (:func:`av_cache_dir`).
        seed: drives the image subset, the utterance paired with each image, its time shift and its noise;
            the banks are fixed (the same for every seed).
        noise: SNR in dB of the white noise added to each clip (lower = noisier audio); ``None`` = clean.
        n_utterances: bank size per class.
        cache_features: keep the computed features in ``cache`` (float16, keyed by a hash of the bank
            fingerprint, split, seed, noise and the chosen images) and reuse them on the next call.
        chunk: clips turned into features at a time (memory bound).

    Returns:
        :class:`AVData` with ``image`` (N, 1, 28, 28) float32 in [0, 1], ``audio`` (N, 40, 64) float32
        standardised log-mel, ``label`` (N,) int64.
    """
    if split not in _BANK_SEEDS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if noise is not None and (not isinstance(noise, (int, float)) or not math.isfinite(noise)):
        raise ValueError(f"noise must be a finite SNR in dB or None, got {noise!r}")
    if not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    images, labels = load_fashion_mnist(root, split)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + _SPLIT_OFFSET[split])
    if n_per_class is not None:
        if not isinstance(n_per_class, int) or n_per_class < 1:
            raise ValueError(f"n_per_class must be a positive int or None, got {n_per_class!r}")
        chosen = []
        for c in range(len(CLASS_WORDS)):
            idx = (labels == c).nonzero().flatten()
            if n_per_class > idx.numel():
                raise ValueError(
                    f"n_per_class={n_per_class} but class {c} has only {idx.numel()} {split} images"
                )
            chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:n_per_class]])
        index = torch.cat(chosen).sort().values
    else:
        index = torch.arange(labels.numel())
    label = labels[index]
    bank = render_bank(split, n_utterances=n_utterances, cache=cache)
    per_class = [(bank["labels"] == c).nonzero().flatten() for c in range(len(CLASS_WORDS))]
    counts = torch.tensor([p.numel() for p in per_class])
    if bool((counts == 0).any()):
        raise ValueError(f"the {split} bank has no utterance for some class (counts {counts.tolist()})")
    pick = (torch.rand(label.numel(), generator=gen) * counts[label]).floor().to(torch.int64)
    table = torch.stack([torch.nn.functional.pad(p, (0, int(counts.max()) - p.numel())) for p in per_class])
    utterance = table[label, pick]
    key = hashlib.sha256(
        json.dumps(
            {
                "format": _BANK_FORMAT,
                "bank": bank["fingerprint"],
                "split": split,
                "seed": seed,
                "noise": noise,
                "index": index.tolist(),
                "label": label.tolist(),
            }
        ).encode()
    ).hexdigest()
    fpath = av_cache_dir(cache) / f"features-{split}-{key[:24]}.pt"
    audio = _load_features(fpath, key, label.numel()) if cache_features else None
    if audio is None:
        audio = torch.empty(label.numel(), N_MELS, N_FRAMES, dtype=torch.float16)
        for s in range(0, label.numel(), chunk):
            audio[s : s + chunk] = log_mel(_mix(bank, utterance[s : s + chunk], gen, noise)).half()
        if cache_features:
            fpath.parent.mkdir(parents=True, exist_ok=True)
            tmp = fpath.with_suffix(f".tmp{os.getpid()}")
            torch.save({"key": key, "audio": audio}, tmp)
            os.replace(tmp, fpath)
    audio = audio.to(torch.float32)
    image = images[index].to(torch.float32).div_(255.0).unsqueeze(1)
    meta = {
        "split": split,
        "seed": seed,
        "noise_snr_db": noise,
        "n_utterances": n_utterances,
        "bank_fingerprint": bank["fingerprint"],
        "sample_rate": SAMPLE_RATE,
    }
    return AVData(
        image=image,
        audio=audio,
        label=label,
        class_names=CLASS_WORDS,
        utterance=utterance,
        index=index,
        meta=meta,
    )
