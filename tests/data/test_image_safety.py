"""Image decoding accepts only image formats; hidden and OS files are never images nor classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resomap.data.io import IMAGE_FORMATS, UnsupportedImageError, is_image_file, load_rgb
from resomap.data.validate import BadImagesError, validate_images
from resomap.data_tools.prepare import prepare_folder
from resomap.errors import ResoMapError

# A minimal Encapsulated PostScript file: PIL identifies it as EPS from its header and, asked to
# decode it, would hand it to Ghostscript.
EPS = b"""%!PS-Adobe-3.0 EPSF-3.0
%%BoundingBox: 0 0 8 8
%%EndComments
newpath 0 0 moveto 8 0 lineto 8 8 lineto closepath fill
showpage
%%EOF
"""
RATIOS = {"train": 0.5, "val": 0.25, "test": 0.25}


def _image(path: Path, fmt: str = "PNG", value: int = 120) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path, format=fmt)
    return path


def test_an_eps_file_named_jpg_is_refused_naming_it(tmp_path: Path):
    fake = tmp_path / "x.jpg"
    fake.write_bytes(EPS)
    with Image.open(fake) as unrestricted:  # what PIL alone would do with it (header only)
        assert unrestricted.format == "EPS"
    with pytest.raises(UnsupportedImageError) as raised:
        load_rgb(fake)
    message = str(raised.value)
    assert str(fake) in message and "PostScript/EPS" in message
    assert "JPEG, PNG, BMP, TIFF or WebP" in message
    # Both a user error (one message, exit 2) and an OSError (what validation lists as unreadable).
    assert isinstance(raised.value, ResoMapError) and isinstance(raised.value, OSError)


@pytest.mark.parametrize(("name", "fmt"), [("a.jpg", "JPEG"), ("b.png", "PNG"), ("c.bmp", "BMP"),
                                           ("d.tif", "TIFF"), ("e.webp", "WEBP")])
def test_every_accepted_format_still_decodes(tmp_path: Path, name: str, fmt: str):
    assert fmt in IMAGE_FORMATS
    image = load_rgb(_image(tmp_path / name, fmt))
    assert image.mode == "RGB" and image.size == (8, 8)


def test_a_gif_named_png_is_refused(tmp_path: Path):
    fake = tmp_path / "y.png"
    Image.new("P", (8, 8)).save(fake, format="GIF")
    with pytest.raises(UnsupportedImageError, match=r"y\.png is not a JPEG.*\(it is GIF"):
        load_rgb(fake)


def test_validation_lists_the_eps_file_among_unreadable_images(tmp_path: Path):
    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        _image(root / split / "a" / "ok.png")
    (root / "train" / "a" / "x.jpg").write_bytes(EPS)
    with pytest.raises(BadImagesError) as raised:
        validate_images(root, ("train", "val", "test"), ["a"], fingerprint="eps-test")
    message = str(raised.value)
    assert f"{root / 'train' / 'a' / 'x.jpg'}: UnsupportedImageError" in message
    assert "PostScript/EPS" in message
    skipped = validate_images(root, ("train", "val", "test"), ["a"], fingerprint="eps-test",
                              on_bad_image="skip")
    assert skipped == ["train/a/x.jpg"]


@pytest.mark.parametrize("name", [".DS_Store", "._photo.jpg", ".hidden.png", "Thumbs.db", "desktop.ini",
                                  "THUMBS.DB"])
def test_hidden_and_os_files_are_never_images(name: str):
    assert not is_image_file(Path("class") / name)


def test_prepare_takes_no_hidden_or_os_entry_as_a_class_or_an_image(tmp_path: Path):
    source = tmp_path / "input"
    for name in ("cat", "dog"):
        for index in range(4):
            _image(source / name / f"{index}.png", value=40 * index)
        # Files the OS or a copy tool leaves: a macOS resource fork (not an image at all), a hidden
        # image, an image inside a hidden folder.
        (source / name / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
        _image(source / name / ".hidden.png")
        _image(source / name / ".thumbnails" / "small.png")
    (source / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (source / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    # Folders of valid images that only the folder's name rules out as a class.
    for folder in ("__MACOSX/cat", "__MACOSX/dog", ".git", ".Trash"):
        for index in range(3):
            _image(source / folder / f"{index}.png")
    output = prepare_folder(source, tmp_path / "prepared", RATIOS, seed=0, link="copy")
    manifest = json.loads((output / "prepare.json").read_text())
    assert manifest["classes"] == ["cat", "dog"]
    placed = sorted(path.relative_to(output).as_posix() for path in output.rglob("*") if path.is_file())
    assert len([path for path in placed if path != "prepare.json"]) == 8
    assert all(not part.startswith(".") and part.lower() != "__macosx"
               for path in placed for part in path.split("/"))


def _data_set_with_hidden_entries(root: Path) -> None:
    """Two classes per split, two visible images each (one in a sub-folder), and hidden and OS
    entries at every depth, each holding valid images that must never be read."""
    for split in ("train", "val", "test"):
        for name, value in (("akiec", 60), ("bcc", 180)):
            _image(root / split / name / "0.png", value=value)
            _image(root / split / name / "sub" / "1.png", value=value)
            _image(root / split / name / ".thumbnails" / "t.png", value=255 - value)
            _image(root / split / name / "sub" / ".hidden" / "deep.png")
            _image(root / split / name / "@eaDir" / "nas.png")
            _image(root / split / name / "__MACOSX" / "fork.png")
            (root / split / name / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
            (root / split / name / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
            (root / split / name / "desktop.ini").write_text("[.ShellClassInfo]\n")
        for hidden in (".ipynb_checkpoints", "__MACOSX", ".git"):
            _image(root / split / hidden / "x.png")


def test_hidden_and_os_folders_are_never_classes_nor_images_at_any_depth(tmp_path: Path):
    from resomap.data.datamodule import ImageFolderDataModule, list_classes
    from resomap.data.io import image_files
    from resomap.data.validate import image_files as files_to_validate

    root = tmp_path / "data"
    _data_set_with_hidden_entries(root)
    assert list_classes(root) == ["akiec", "bcc"]
    expected = sorted(f"{split}/{name}/{path}" for split in ("train", "val", "test")
                      for name in ("akiec", "bcc") for path in ("0.png", "sub/1.png"))
    assert [path.relative_to(root).as_posix() for path in image_files(root)] == expected
    assert [path.relative_to(root).as_posix()
            for path in files_to_validate(root, ("train", "val", "test"), ["akiec", "bcc"])] == expected
    datamodule = ImageFolderDataModule(str(root), image_size=8, batch_size=2, num_workers=0,
                                       validation_cache=str(tmp_path / "validation"))
    datamodule.setup("fit")
    assert datamodule.classes == ["akiec", "bcc"]
    for split, dataset in datamodule.datasets.items():
        samples = sorted((Path(path).relative_to(root).as_posix(), label) for path, label in dataset.samples)
        assert samples == [(f"{split}/akiec/0.png", 0), (f"{split}/akiec/sub/1.png", 0),
                           (f"{split}/bcc/0.png", 1), (f"{split}/bcc/sub/1.png", 1)]
