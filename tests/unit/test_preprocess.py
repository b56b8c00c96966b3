import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.inference.preprocess import PAD_VALUE, Preprocessor, fit_image, fit_transform

DOG = "../shared/data/darknet-samples/dog.jpg"


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_letterbox_places_a_wide_image_centred_with_grey_bars():
    t = fit_transform((480, 640), (416, 416), "letterbox")
    assert t.resized_size == (312, 416) and t.pad == (0, 52)
    out = fit_image(random_image(480, 640), t, (416, 416))
    assert (out[:52] == PAD_VALUE).all() and (out[52 + 312:] == PAD_VALUE).all()
    assert not (out[52:364] == PAD_VALUE).all()


def test_resize_mode_stretches_without_padding():
    t = fit_transform((480, 640), (416, 416), "resize")
    assert t.pad == (0, 0) and t.resized_size == (416, 416)
    assert t.scale == pytest.approx((416 / 640, 416 / 480))


def test_unknown_mode_and_empty_image_are_rejected():
    with pytest.raises(ValueError, match="resize mode"):
        fit_transform((10, 10), (416, 416), "crop")
    with pytest.raises(ValueError, match="no pixels"):
        fit_transform((0, 10), (416, 416), "letterbox")


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 900), w=st.integers(1, 900),
       dst=st.sampled_from([(416, 416), (640, 640), (320, 480), (384, 640)]))
def test_letterbox_is_pixel_identical_to_ultralytics(h, w, dst):
    from ultralytics.data.augment import LetterBox

    image = random_image(h, w, seed=h * 1000 + w)
    ours = fit_image(image, fit_transform((h, w), dst, "letterbox"), dst)
    theirs = LetterBox(dst, auto=False)(image=image)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(8, 1500), w=st.integers(8, 1500), mode=st.sampled_from(["letterbox", "resize"]))
def test_boxes_map_back_to_source_exactly(h, w, mode):
    t = fit_transform((h, w), (416, 416), mode)
    rng = np.random.default_rng(h + w)
    xy1 = rng.uniform(0, [w, h], (20, 2))
    xy2 = xy1 + rng.uniform(0, [w, h], (20, 2))
    boxes = np.clip(np.concatenate([xy1, xy2], axis=1), 0, [w, h, w, h]).astype(np.float32)
    back = t.boxes_to_source(t.boxes_to_input(boxes))
    np.testing.assert_allclose(back, boxes, atol=1e-3 * max(h, w))


def test_boxes_to_source_clips_to_the_image():
    t = fit_transform((480, 640), (416, 416), "letterbox")
    back = t.boxes_to_source(np.array([[-20, 0, 500, 416]], np.float32))
    np.testing.assert_allclose(back, [[0, 0, 640, 480]])


def test_boxes_to_source_matches_ultralytics_scale_boxes():
    from ultralytics.utils.ops import scale_boxes

    boxes = np.array([[10, 60, 200, 300], [0, 52, 416, 364]], np.float32)
    for source in [(480, 640), (576, 768), (1080, 810), (333, 777)]:
        ours = fit_transform(source, (416, 416), "letterbox").boxes_to_source(boxes)
        theirs = scale_boxes((416, 416), boxes.copy(), source)
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-4)


def test_preprocessor_writes_rgb_nchw_scaled_into_a_reused_buffer():
    image = cv2.imread(DOG)
    pre = Preprocessor((416, 416), "resize", batch_size=2)
    tensor, transforms = pre([image])
    assert tensor.shape == (1, 3, 416, 416) and tensor.dtype == np.float32
    expected = cv2.dnn.blobFromImage(image, 1 / 255.0, (416, 416), swapRB=True, crop=False)
    np.testing.assert_allclose(tensor, expected, atol=1e-6)
    again, _ = pre([image, image[:, ::-1].copy()])
    assert again.shape[0] == 2
    assert np.shares_memory(tensor, again)  # one buffer for every call
    assert transforms[0].source_size == image.shape[:2]


def test_preprocessor_float16_and_bad_inputs():
    pre = Preprocessor((64, 64), "letterbox", dtype=np.float16)
    tensor, _ = pre([random_image(30, 50)])
    assert tensor.dtype == np.float16 and float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    np.testing.assert_allclose(tensor[0, :, 0, 0], PAD_VALUE / 255.0, atol=1e-3)
    with pytest.raises(ValueError, match=r"1\.\.1 images"):
        pre([random_image(8, 8), random_image(8, 8)])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pre([np.zeros((8, 8), np.uint8)])
    with pytest.raises(ValueError, match="float32 or float16"):
        Preprocessor((64, 64), dtype=np.int8)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_prepare_matches_the_batch_path_in_fresh_memory(dtype):
    pre = Preprocessor((96, 128), "letterbox", batch_size=2, dtype=dtype)
    image = random_image(75, 200)
    tensor, transform = pre.prepare(image)
    batch, transforms = pre([image])
    assert tensor.shape == (1, 3, 96, 128) and tensor.dtype == dtype
    assert np.array_equal(tensor, batch) and transform == transforms[0]
    assert not np.shares_memory(tensor, batch)  # capture threads must not share the buffer
    second, _ = pre.prepare(image)
    assert not np.shares_memory(tensor, second)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        pre.prepare(np.zeros((8, 8), np.uint8))
