import io

from conftest import save_image
from resclassify.datasets import expand_inputs, find_images
from resclassify.errors import InputError


def test_folders_are_searched_recursively_in_sorted_order(tmp_path):
    for name in ["b.jpg", "a.PNG", "sub/c.JpEg", "sub/deeper/d.webp", ".hidden.jpg", ".secret/e.jpg", "notes.txt"]:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    found = [p.removeprefix(str(tmp_path) + "/") for p in find_images(tmp_path)]
    assert found == ["a.PNG", "b.jpg", "sub/c.JpEg", "sub/deeper/d.webp"]


def test_inputs_keep_their_order_and_missing_paths_become_errors(tmp_path):
    first = save_image(tmp_path / "z.png")
    folder = tmp_path / "folder"
    save_image(folder / "b.png")
    save_image(folder / "a.png")
    items = expand_inputs([str(first), str(tmp_path / "missing.jpg"), str(folder)])
    assert items[0] == str(first)
    assert isinstance(items[1], InputError) and str(items[1]) == f"{tmp_path / 'missing.jpg'}: no such file or directory"
    assert items[2:] == [str(folder / "a.png"), str(folder / "b.png")]


def test_stdin_lists_paths_one_a_line(tmp_path):
    a = save_image(tmp_path / "a.png")
    b = save_image(tmp_path / "b.png")
    stdin = io.StringIO(f"{b}\n\n{a}\r\n")
    assert expand_inputs(["-"], stdin) == [str(b), str(a)]


def test_a_folder_without_images_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    [item] = expand_inputs([str(tmp_path / "empty")])
    assert str(item) == f"{tmp_path / 'empty'}: no image files found in this folder"
