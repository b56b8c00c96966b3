"""make-dataset --backgrounds: shapes on crops of real photos, exact labels, recorded ratio."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from agent.cli.main import main
from agent.datasets.canvas import to_uint8
from agent.datasets.photos import PhotoBackgrounds
from agent.datasets.synthetic import make_dataset, render_scene
from agent.errors import DataError

PHOTOS = Path("../shared/data/coco128/images")


@pytest.fixture(scope="module")
def photos():
    return PhotoBackgrounds(PHOTOS)


def test_photos_are_read_once_and_named(photos):
    assert len(photos) == 128 and all(name.endswith(".jpg") for name in photos.names)


def test_a_photo_background_is_the_crop_and_objects_are_drawn_over_it(photos):
    for seed in range(6):
        scene = render_scene(np.random.default_rng(seed), 256, 192, photos=photos, photo_ratio=1.0,
                             effects=False)
        assert scene.background.startswith("photo:")
        # The same generator, replayed: the ratio draw, then the crop.
        rng = np.random.default_rng(seed)
        rng.random()
        crop, name = photos.crop(rng, 256, 192)
        assert scene.background == f"photo:{name}"
        untouched = np.ones((192, 256), bool)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.roi
            untouched[y0:y1, x0:x1] &= obj.coverage == 0
        assert untouched.mean() > 0.3
        assert np.array_equal(scene.image[untouched], to_uint8(crop)[untouched])


def centre_mask(shape, width: int, height: int, ss: int) -> np.ndarray:
    """Independent geometry (no coverage maps, no OpenCV): sample points inside the shape."""
    x = (np.arange(width * ss)[None, :] + 0.5) / ss
    y = (np.arange(height * ss)[:, None] + 0.5) / ss
    if shape.vertices is None:
        cx, cy = shape.center
        return (x - cx) ** 2 + (y - cy) ** 2 <= shape.radius ** 2
    v = shape.vertices
    sides = np.stack([(v[(i + 1) % len(v), 0] - v[i, 0]) * (y - v[i, 1])
                      - (v[(i + 1) % len(v), 1] - v[i, 1]) * (x - v[i, 0]) for i in range(len(v))])
    return (sides >= 0).all(axis=0) | (sides <= 0).all(axis=0)


def test_labels_stay_exact_on_photos(photos):
    """Each label is the box of the object's visible part, whatever lies behind it."""
    checked, ss = 0, 4
    for seed in range(30):
        scene = render_scene(np.random.default_rng(seed), 192, 192, photos=photos, photo_ratio=1.0,
                             effects=False)
        masks = [centre_mask(o.shape, 192, 192, ss) for o in scene.objects]
        for j, obj in enumerate(scene.objects):
            visible = masks[j].copy()
            for later in masks[j + 1:]:
                visible &= ~later
            rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
            expected = (cols[0] / ss, rows[0] / ss, (cols[-1] + 1) / ss, (rows[-1] + 1) / ss)
            # occluder edges are cut at whole pixels (>= half covered): at most 1 px apart
            assert max(abs(a - b) for a, b in zip(expected, obj.box())) <= 1.0, (seed, expected, obj.box())
            checked += 1
    assert checked > 60


def test_the_ratio_decides_the_share_of_photo_backgrounds(photos):
    kinds = [render_scene(np.random.default_rng([9, i]), 96, 96, photos=photos, photo_ratio=0.3).background
             for i in range(200)]
    share = sum(k.startswith("photo:") for k in kinds) / len(kinds)
    assert 0.2 < share < 0.4
    none = [render_scene(np.random.default_rng([9, i]), 96, 96, photos=photos, photo_ratio=0.0).background
            for i in range(20)]
    assert not any(k.startswith("photo:") for k in none)


def test_make_dataset_records_the_backgrounds_and_is_reproducible(tmp_path):
    a, _ = (make_dataset(tmp_path / name, train=6, val=2, imgsz=96, seed=4, backgrounds=PHOTOS,
                         background_ratio=0.5) for name in ("a", "b"))
    spec = yaml.safe_load(a.read_text())
    assert spec["backgrounds"] == {"folder": str(PHOTOS.resolve()), "photos": 128, "ratio": 0.5}
    assert "50% of the images on crops of the 128 photos" in a.read_text()
    for sub in ("labels/train", "images/train"):
        files = sorted((tmp_path / "a" / sub).iterdir())
        assert files and all(f.read_bytes() == (tmp_path / "b" / sub / f.name).read_bytes() for f in files)


def test_bad_backgrounds_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(DataError, match="no such folder"):
        PhotoBackgrounds(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    with pytest.raises(DataError, match="holds no readable images"):
        PhotoBackgrounds(tmp_path / "empty")
    code = main(["make-dataset", "shapes", "--out", str(tmp_path / "out"), "--train", "2", "--val", "0",
                 "--backgrounds", str(tmp_path / "empty")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --backgrounds:")
    assert not (tmp_path / "out" / "data.yaml").exists()
    with pytest.raises(DataError, match="background_ratio"):
        make_dataset(tmp_path / "r", train=1, val=0, imgsz=64, backgrounds=PHOTOS, background_ratio=1.5)
