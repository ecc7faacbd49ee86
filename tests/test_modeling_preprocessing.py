"""One preprocessing path: decoding (guards, draft mode), the square squash, augmentation, normalisation."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from modeling.preprocessing import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    EvalTransform,
    ImageDecodeError,
    PreprocessConfig,
    TrainTransform,
    load_image,
    normalize_batch,
    probe_image,
    stack_images,
)
from tests.modeling_fixtures import jpeg_bytes, png_bytes


def test_bytes_and_path_decode_to_the_same_rgb_image(tmp_path):
    data = jpeg_bytes(64, 48)
    (tmp_path / "a.jpg").write_bytes(data)
    from_bytes, from_path = load_image(data), load_image(tmp_path / "a.jpg")
    assert from_bytes.mode == "RGB" and from_bytes.size == (64, 48)
    assert np.array_equal(np.asarray(from_bytes), np.asarray(from_path))


@pytest.mark.parametrize(("data", "message"), [
    (b"", "empty input"),
    (b"this is not an image at all", "not a recognised image format"),
    (jpeg_bytes(200, 150)[:600], "truncated"),
])
def test_bad_input_raises_image_decode_error_with_a_reason(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        load_image(data)


def test_missing_file_is_an_image_decode_error(tmp_path):
    with pytest.raises(ImageDecodeError, match="file not found"):
        load_image(tmp_path / "nope.jpg")


def test_pixel_guard_refuses_huge_images_before_decoding():
    data = jpeg_bytes(400, 300)
    with pytest.raises(ImageDecodeError, match="over the 100,000 pixel limit"):
        load_image(data, max_pixels=100_000)
    with pytest.raises(ImageDecodeError, match="pixel limit"):
        probe_image(data, max_pixels=100_000)
    assert probe_image(data) == (400, 300, "JPEG")


def test_large_jpeg_is_decoded_in_draft_mode_near_twice_the_target_side():
    data = jpeg_bytes(1600, 1200)
    img = load_image(data, target_side=100)
    # 1/4 scale keeps both sides >= 2 x 100; full decoding would give 1600x1200
    assert img.size == (400, 300)
    assert load_image(data).size == (1600, 1200)


def test_png_with_alpha_becomes_rgb():
    img = load_image(png_bytes(50, 70, "RGBA"))
    assert img.mode == "RGB" and img.size == (50, 70)


def _striped(width: int, height: int) -> Image.Image:
    """White photo with a red stripe along the left edge and a blue one along the bottom edge."""
    arr = np.full((height, width, 3), 255, np.uint8)
    arr[:, : max(1, width // 20)] = (255, 0, 0)
    arr[-max(1, height // 20):, :] = (0, 0, 255)
    return Image.fromarray(arr)


def test_eval_transform_squashes_without_cropping_the_edges():
    out = EvalTransform(64)(_striped(300, 100))  # aspect 3:1
    assert out.dtype == torch.uint8 and tuple(out.shape) == (3, 64, 64)
    hwc = out.permute(1, 2, 0).numpy().astype(int)
    assert (hwc[10:50, 0] == (255, 0, 0)).all()  # the left edge survives
    assert hwc[-1, 32, 2] > 200 and hwc[-1, 32, 0] < 60  # and so does the bottom one


def test_train_transform_zooms_out_only_and_keeps_the_whole_photo():
    torch.manual_seed(0)
    side = 64
    transform = TrainTransform(side, color=0.0, hue=0.0, flip_p=0.0)
    for _ in range(10):
        hwc = transform(Image.new("RGB", (120, 80), (250, 0, 0))).permute(1, 2, 0).numpy().astype(int)
        red = (hwc[..., 0] > 200) & (hwc[..., 1] < 60)
        rows, cols = np.where(red)
        h, w = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert red.sum() == h * w  # one solid rectangle: nothing cut off, nothing else red
        assert 0.85 * side - 1 <= min(h, w) and max(h, w) <= side


def test_train_transform_is_random_but_seeded():
    img = _striped(90, 70)
    transform = TrainTransform(48)
    torch.manual_seed(1)
    a = transform(img)
    torch.manual_seed(1)
    b = transform(img)
    c = transform(img)
    assert torch.equal(a, b) and not torch.equal(b, c)
    assert tuple(a.shape) == (3, 48, 48) and a.dtype == torch.uint8


def test_normalize_batch_uses_the_given_constants():
    batch = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    batch[0] = 255
    for c, m in enumerate(IMAGENET_MEAN):
        batch[1, c] = round(255 * m)
    x = normalize_batch(batch, IMAGENET_MEAN, IMAGENET_STD)
    assert x.dtype == torch.float32
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)]
    assert x[0, :, 0, 0].tolist() == pytest.approx(expected, abs=1e-5)
    assert x[1].abs().max() < 0.02
    other = normalize_batch(batch, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert other[0].min() == pytest.approx(1.0)
    assert normalize_batch(batch, IMAGENET_MEAN, IMAGENET_STD, torch.channels_last).is_contiguous(
        memory_format=torch.channels_last)
    with pytest.raises(TypeError, match="uint8"):
        normalize_batch(batch.float(), IMAGENET_MEAN, IMAGENET_STD)


def test_preprocess_config_round_trips_and_validates():
    config = PreprocessConfig(96, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["resize_mode"] == "squash"
    with pytest.raises(ValueError, match="only: squash"):
        PreprocessConfig(96, resize_mode="letterbox")


def test_jpeg_helper_round_trip_is_lossy_but_close():
    img = load_image(io.BytesIO(jpeg_bytes(30, 30, (10, 20, 30))).getvalue())
    assert np.abs(np.asarray(img).astype(int) - (10, 20, 30)).max() < 8


def test_stack_images_is_a_channels_last_batch_of_the_same_pixels():
    images = [EvalTransform(24)(_striped(40 + 10 * i, 30)) for i in range(3)]
    batch = stack_images(images)
    assert batch.shape == (3, 3, 24, 24) and batch.dtype == torch.uint8
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch, torch.stack(images))
