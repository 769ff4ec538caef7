"""AV-Fashion: WAV parsing, log-mel, bank caching, pairing, errors (espeak-ng only in the skip-if test)."""

from __future__ import annotations

import math
import shutil
import struct

import pytest
import torch

from molearn.datasets import FASHION_MNIST_FILES, write_idx
from molearn.datasets import _av_fashion as av


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> torch.Tensor:
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (amp * torch.sin(2 * math.pi * freq * t)).to(torch.float32)


# ---------------------------------------------------------------------------------------------- WAV
def test_parse_wav_roundtrip_and_espeak_placeholder_size():
    x = _sine(440, 22050, 0.1)
    data = av.wav_bytes(x, 22050)
    y, rate = av.parse_wav(data)
    assert rate == 22050 and y.shape == x.shape
    assert torch.allclose(y, x, atol=1 / 32768 + 1e-6)
    # espeak-ng --stdout streams: RIFF and data sizes are placeholders larger than the file
    streamed = bytearray(data)
    streamed[4:8] = struct.pack("<I", 0x7FFFF024)
    streamed[40:44] = struct.pack("<I", 0x7FFFF000)
    y2, _ = av.parse_wav(bytes(streamed))
    assert torch.equal(y2, y)


def test_parse_wav_stereo_8bit_and_errors():
    # 8-bit unsigned stereo: channels are averaged
    frames = bytes([128 + 64, 128 - 64, 255, 1])  # (0.5, -0.5), (127/128, -127/128)
    fmt = struct.pack("<HHIIHH", 1, 2, 8000, 16000, 2, 8)
    data = b"RIFF" + struct.pack("<I", 36 + 4) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
    data += b"data" + struct.pack("<I", 4) + frames
    y, rate = av.parse_wav(data)
    assert rate == 8000 and torch.allclose(y, torch.zeros(2))
    with pytest.raises(av.WavError, match="RIFF"):
        av.parse_wav(b"not a wav at all")
    bad = data.replace(
        struct.pack("<HHIIHH", 1, 2, 8000, 16000, 2, 8), struct.pack("<HHIIHH", 2, 2, 8000, 16000, 2, 4)
    )
    with pytest.raises(av.WavError, match="unsupported"):
        av.parse_wav(bad)
    with pytest.raises(av.WavError, match="no data chunk"):
        av.parse_wav(data[:36])


# -------------------------------------------------------------------------------------- signal chain
def test_resample_keeps_a_tone_and_removes_aliases():
    x = _sine(1000, 22050, 0.5)
    y = av.resample(x, 22050, 16000)
    assert y.numel() == 8000
    ref = _sine(1000, 16000, 0.5)
    mid = slice(200, -200)  # away from the edges
    assert torch.allclose(y[mid], ref[mid], atol=2e-3)
    # 10 kHz is above the new Nyquist (8 kHz): it must be filtered out, not folded to 6 kHz
    z = av.resample(_sine(10_000, 22050, 0.5), 22050, 16000)
    assert z[mid].abs().max() < 0.01


def test_mel_filterbank_shape_and_triangles():
    fb = av.mel_filterbank(40, 512, 16000)
    assert fb.shape == (40, 257) and fb.min() >= 0 and fb.max() <= 1 + 1e-6
    assert (fb.max(dim=1).values > 0.5).all()  # no empty filter
    with pytest.raises(ValueError, match="f_max"):
        av.mel_filterbank(40, 512, 16000, f_max=9000)


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3000.0])
def test_log_mel_peak_in_the_right_band(freq):
    wave, _ = av.parse_wav(av.wav_bytes(_sine(freq, 16000, 1.0), 16000))
    mel = av.log_mel(wave)
    assert mel.shape == (40, 1 + (16000 - av.N_FFT) // av.HOP_LENGTH)
    assert abs(float(mel.mean())) < 1e-4 and abs(float(mel.std()) - 1) < 1e-3
    m_edges = torch.linspace(0, 2595 * math.log10(1 + 8000 / 700), 42)
    centres = 700 * (10 ** (m_edges[1:-1] / 2595) - 1)
    expected = int((centres - freq).abs().argmin())
    assert int(mel.mean(dim=1).argmax()) == expected
    with pytest.raises(ValueError, match="at least"):
        av.log_mel(torch.zeros(100))


# --------------------------------------------------------------------------------------- fixtures
def _fake_synthesize(calls):
    def fake(text, *, voice="en-us", rate=175, pitch=50):
        calls.append(text)
        # a different tone per word, length from the speaking rate: deterministic and espeak-free
        freq = 200.0 + 150.0 * av.CLASS_WORDS.index(text)
        x = torch.cat([torch.zeros(500), _sine(freq, 22050, 0.2 + 20.0 / rate), torch.zeros(500)])
        return av.parse_wav(av.wav_bytes(x, 22050))

    return fake


@pytest.fixture
def fake_env(tmp_path, monkeypatch):
    """Tiny Fashion-MNIST IDX files (20 images per class) and a fake synthesiser."""
    root = tmp_path / "fm"
    g = torch.Generator().manual_seed(0)
    for split, (img, lab) in FASHION_MNIST_FILES.items():
        n = 20 * 10 if split == "train" else 5 * 10
        write_idx(root / f"{img}.gz", torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8))
        write_idx(root / f"{lab}.gz", torch.arange(n, dtype=torch.uint8) % 10)
    calls: list[str] = []
    monkeypatch.setattr(av, "synthesize", _fake_synthesize(calls))
    monkeypatch.setattr(av, "_espeak", lambda: "/usr/bin/espeak-ng")
    return root, tmp_path / "cache", calls


def test_shapes_dtypes_and_dataset_view(fake_env):
    root, cache, _ = fake_env
    d = av.load_av_fashion("train", n_per_class=3, root=root, cache=cache, n_utterances=2)
    assert len(d) == 30
    assert d.image.shape == (30, 1, 28, 28) and d.image.dtype == torch.float32
    assert float(d.image.min()) >= 0 and float(d.image.max()) <= 1
    assert d.audio.shape == (30, av.N_MELS, av.N_FRAMES) and d.audio.dtype == torch.float32
    assert d.label.dtype == torch.int64 and torch.equal(d.label.bincount(), torch.full((10,), 3))
    assert torch.isfinite(d.audio).all()
    img, aud, lab = d[4]
    assert img.shape == (1, 28, 28) and aud.shape == (av.N_MELS, av.N_FRAMES) and int(lab) == int(d.label[4])
    # each image is paired with an utterance of its own class
    bank = av.render_bank("train", n_utterances=2, cache=cache)
    assert torch.equal(bank["labels"][d.utterance], d.label)
    loader = torch.utils.data.DataLoader(d, batch_size=8)
    xb, ab, yb = next(iter(loader))
    assert xb.shape == (8, 1, 28, 28) and ab.shape == (8, av.N_MELS, av.N_FRAMES) and yb.shape == (8,)


def test_pairing_is_deterministic_per_seed(fake_env):
    root, cache, _ = fake_env
    kw = {"n_per_class": 5, "root": root, "cache": cache, "n_utterances": 4, "noise": 5.0}
    a = av.load_av_fashion("train", seed=1, cache_features=False, **kw)
    b = av.load_av_fashion("train", seed=1, **kw)  # computed, then cached
    c = av.load_av_fashion("train", seed=1, **kw)  # from the feature cache
    other = av.load_av_fashion("train", seed=2, **kw)
    assert torch.equal(a.index, b.index) and torch.equal(a.utterance, b.utterance)
    assert torch.equal(a.audio, b.audio) and torch.equal(b.audio, c.audio)
    assert not torch.equal(a.index, other.index) or not torch.equal(a.audio, other.audio)
    clean = av.load_av_fashion("train", seed=1, cache_features=False, **{**kw, "noise": None})
    assert torch.equal(clean.utterance, a.utterance)
    assert not torch.allclose(clean.audio, a.audio)


def test_bank_cache_and_fingerprint_invalidation(fake_env, monkeypatch):
    _, cache, calls = fake_env
    b1 = av.render_bank("test", n_utterances=2, cache=cache)
    assert len(calls) == 20 and b1["waves"].shape[0] == 20
    b2 = av.render_bank("test", n_utterances=2, cache=cache)
    assert len(calls) == 20  # from the cache, no synthesis
    assert torch.allclose(b2["waves"], b1["waves"], atol=b1["scale"] / 32767)
    # the recipe changes (e.g. another pitch range): new fingerprint, rendered again
    monkeypatch.setattr(av, "PITCH_RANGE", (30, 60))
    b3 = av.render_bank("test", n_utterances=2, cache=cache)
    assert b3["fingerprint"] != b1["fingerprint"] and len(calls) == 40
    # a cache file whose stored fingerprint does not match is not trusted
    monkeypatch.setattr(av, "PITCH_RANGE", (20, 80))
    (path,) = [p for p in cache.glob("bank-test-2-*.pt") if b1["fingerprint"][:16] in p.name]
    stored = torch.load(path, weights_only=True)
    stored["fingerprint"] = "0" * 64
    torch.save(stored, path)
    av.render_bank("test", n_utterances=2, cache=cache)
    assert len(calls) == 60
    path.write_bytes(b"corrupt")
    av.render_bank("test", n_utterances=2, cache=cache)
    assert len(calls) == 80


def test_missing_espeak_error(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(av.ENV_ESPEAK, raising=False)
    with pytest.raises(av.EspeakNotFoundError, match="apt-get install espeak-ng"):
        av.render_bank("train", n_utterances=1, cache=tmp_path)
    with pytest.raises(RuntimeError, match="apt-get install espeak-ng"):
        av.synthesize("coat")


def test_bad_arguments(fake_env):
    root, cache, _ = fake_env
    with pytest.raises(ValueError, match="split"):
        av.load_av_fashion("val", root=root, cache=cache)
    with pytest.raises(ValueError, match="n_per_class"):
        av.load_av_fashion("train", n_per_class=21, root=root, cache=cache, n_utterances=1)
    with pytest.raises(ValueError, match="noise"):
        av.load_av_fashion("train", n_per_class=1, root=root, cache=cache, noise=float("nan"))
    with pytest.raises(ValueError, match="same length"):
        av.AVData(torch.zeros(2, 1, 28, 28), torch.zeros(3, 40, 64), torch.zeros(2, dtype=torch.int64))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_espeak_renders_two_utterances():
    a, ra = av.synthesize("coat", voice="en-us+f2", rate=170, pitch=60)
    b, rb = av.synthesize("ankle boot", voice="en-gb-scotland+m3", rate=150, pitch=40)
    assert ra == rb > 8000
    assert a.numel() > 0.2 * ra and b.numel() > a.numel()  # "ankle boot" is longer than "coat"
    assert float(a.abs().max()) > 0.05 and torch.isfinite(a).all()
    mel = av.log_mel(av.resample(a, ra, av.SAMPLE_RATE))
    assert mel.shape[0] == av.N_MELS and torch.isfinite(mel).all()
