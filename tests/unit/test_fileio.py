"""agent.fileio: the one image lister, and what lists images through it."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.errors import DataError
from agent.fileio import image_files, is_image_file, list_images


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    pixels = np.full((20, 20, 3), 127, np.uint8)  # photo backgrounds take 16 px and up
    for name in ("b.png", "a.jpg", "C.JPEG", "d.webp", "sub/e.png"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(path), pixels)
    (tmp_path / "labels.txt").write_text("not an image")
    (tmp_path / "odd.jpg").mkdir()  # a folder with an image's name is no image
    return tmp_path


def test_every_image_type_in_a_folder_sorted(folder: Path) -> None:
    assert [p.name for p in image_files(folder)] == ["C.JPEG", "a.jpg", "b.png", "d.webp"]
    assert [p.name for p in image_files(folder, recursive=True)] == ["C.JPEG", "a.jpg", "b.png", "d.webp",
                                                                      "e.png"]
    assert [p.name for p in image_files(str(folder / "*.png"))] == ["b.png"]
    assert image_files(folder / "absent") == [] and image_files(str(folder / "*.gif")) == []
    assert is_image_file("X.TIFF") and not is_image_file("x.txt")


def test_list_images_takes_files_folders_and_patterns(folder: Path) -> None:
    found = list_images([folder / "labels.txt", folder, str(folder / "sub" / "*")])
    assert [p.name for p in found] == ["labels.txt", "C.JPEG", "a.jpg", "b.png", "d.webp", "e.png"]
    with pytest.raises(DataError, match="pattern matches no image files"):
        list_images([str(folder / "*.gif")])


def test_image_folder_camera_and_photo_backgrounds_list_pngs(folder: Path) -> None:
    from agent.capture.sources import source_spec
    from agent.config.schema import CameraConfig
    from agent.datasets.photos import PhotoBackgrounds

    spec = source_spec(CameraConfig(name="c", source=str(folder)))
    assert [p.name for p in spec.images] == ["C.JPEG", "a.jpg", "b.png", "d.webp"]
    assert PhotoBackgrounds(folder).names == ["C.JPEG", "a.jpg", "b.png", "d.webp", "sub/e.png"]


def test_export_checks_a_png_data_set_on_its_images(folder: Path, tmp_path: Path) -> None:
    from agent.cli.training import verify_images

    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for k in range(6):
        cv2.imwrite(str(pngs / f"{k}.png"), np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in verify_images(pngs)] == ["0.png", "1.png", "2.png", "3.png"]
    with pytest.raises(DataError, match=r"--verify-images .*: no image files"):
        verify_images(folder / "sub" / "empty")
