import pytest
from PIL import Image

from mdclust.core.images import discover, load_rgb, sha256_file


def test_discover_is_recursive_sorted_and_filtered(tmp_path):
    for rel in ["b.png", "a/z.JPG", "a/y.txt", ".hidden.png", ".cache/x.png", "c.webp"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    assert [e.path for e in discover(tmp_path)] == ["a/z.JPG", "b.png", "c.webp"]


def test_exif_orientation_and_rgb(tmp_path):
    p = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    Image.new("L", (30, 10), 128).save(p, exif=exif)
    img = load_rgb(p)
    assert img.size == (10, 30)
    assert img.mode == "RGB"


@pytest.mark.parametrize("content,reason", [
    (b"", "empty file"),
    (b"this is text", "not an image"),
])
def test_bad_files_give_reasons(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ValueError, match=reason):
        load_rgb(p)


def test_truncated_png(tmp_path):
    p = tmp_path / "ok.png"
    Image.effect_noise((64, 64), 50).convert("RGB").save(p)
    t = tmp_path / "t.png"
    t.write_bytes(p.read_bytes()[:300])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_rgb(t)
    assert load_rgb(p).size == (64, 64)


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    p = tmp_path / "f"
    p.write_bytes(b"abc" * 1000)
    assert sha256_file(p, chunk=7) == hashlib.sha256(b"abc" * 1000).hexdigest()
