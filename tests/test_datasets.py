import io
import os

from conftest import save_image
from resclassify.sources.inputs import expand_inputs
from resclassify.sources.local import find_images, walk_images
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


def names(paths, root):
    return [str(p).removeprefix(str(root) + "/") for p in paths]


def test_a_link_back_up_is_not_followed_and_the_images_are_listed_once(tmp_path):
    photos = tmp_path / "photos"
    for name in ["a.jpg", "b.jpg", "sub/c.jpg", "sub/d.jpg"]:
        save_image(photos / name, size=(8, 8))
    (photos / "sub" / "up").symlink_to("..")
    (photos / "sub" / "up2").symlink_to("../..")  # above the folder searched: it contains it
    walk = walk_images(photos)
    assert names(walk.paths, photos) == ["a.jpg", "b.jpg", "sub/c.jpg", "sub/d.jpg"]
    assert [(s.path, s.reason) for s in walk.skipped] == [
        (str(photos / "sub" / "up"), "symbolic link loop, not followed"),
        (str(photos / "sub" / "up2"), "symbolic link loop, not followed")]


def test_two_links_into_each_other_finish(tmp_path):
    photos = tmp_path / "photos"
    save_image(photos / "a" / "x.jpg", size=(8, 8))
    save_image(photos / "b" / "y.jpg", size=(8, 8))
    (photos / "a" / "to_b").symlink_to("../b")
    (photos / "b" / "to_a").symlink_to("../a")
    walk = walk_images(photos)
    assert names(walk.paths, photos) == ["a/x.jpg", "b/y.jpg"]  # each under its real path
    assert {(s.path, s.reason) for s in walk.skipped} == {
        (str(photos / "a" / "to_b"), "symbolic link to a folder already searched, not followed"),
        (str(photos / "b" / "to_a"), "symbolic link to a folder already searched, not followed")}


def test_a_link_to_a_folder_elsewhere_is_followed_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    save_image(elsewhere / "e.jpg", size=(8, 8))
    photos = tmp_path / "photos"
    save_image(photos / "a.jpg", size=(8, 8))
    (photos / "more").symlink_to(elsewhere)
    (photos / "same").symlink_to(elsewhere)
    walk = walk_images(photos)
    assert names(walk.paths, photos) == ["a.jpg", "more/e.jpg"]
    assert [(s.path, s.reason) for s in walk.skipped] == [
        (str(photos / "same"), "symbolic link to a folder already searched, not followed")]


def test_special_files_and_broken_links_with_image_names_are_listed_for_load_image_to_refuse(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "looping_folder").symlink_to("looping_folder")
    (tmp_path / "gone").symlink_to("nowhere")
    walk = walk_images(tmp_path)
    assert names(walk.paths, tmp_path) == ["loop.jpg", "pipe.jpg"]
    assert [(s.path, s.reason) for s in walk.skipped] == [
        (str(tmp_path / "gone"), "broken symbolic link, not followed"),
        (str(tmp_path / "looping_folder"), "symbolic link loop, not followed")]


def test_inputs_that_are_links_loops_say_so_and_others_go_to_load_image(tmp_path):
    loop = tmp_path / "loop.jpg"
    loop.symlink_to("loop.jpg")
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    photos = tmp_path / "photos"
    save_image(photos / "a.png", size=(8, 8))
    (photos / "up").symlink_to("..")
    skipped = []
    items = expand_inputs([str(loop), str(fifo), str(photos)], on_skip=skipped.append)
    assert isinstance(items[0], InputError) and items[0].reason == "symbolic link loop"
    assert items[1:] == [str(fifo), str(photos / "a.png")]  # load_image refuses the FIFO from its stat
    assert [(s.path, s.reason) for s in skipped] == [(str(photos / "up"), "symbolic link loop, not followed")]


def test_empty_stdin_is_an_input_error_like_an_empty_folder():
    [item] = expand_inputs(["-"], io.BytesIO(b""))
    assert isinstance(item, InputError) and str(item) == "-: no paths on stdin"
    [item] = expand_inputs(["-"], io.BytesIO(b"\n  \n"))
    assert str(item) == "-: no paths on stdin"


def test_stdin_names_that_are_not_utf8_reach_their_files(tmp_path):
    raw = os.fsencode(tmp_path) + b"/caf\xe9.png"
    with open(raw, "wb") as file:
        file.write(save_image(tmp_path / "plain.png", size=(8, 8)).read_bytes())
    [item] = expand_inputs(["-"], io.BytesIO(raw + b"\n"))
    assert os.fsencode(item) == raw and os.path.isfile(item)


def test_a_tilde_on_stdin_is_expanded_as_a_shell_expands_an_argument(tmp_path, monkeypatch):
    import pwd

    monkeypatch.setenv("HOME", str(tmp_path))
    photo = save_image(tmp_path / "photos" / "a.jpg")
    me = pwd.getpwuid(os.getuid())
    stdin = io.BytesIO(f"~/photos/a.jpg\n~{me.pw_name}/b.jpg\n~no-such-user-here/c.jpg\nd~/e.jpg\n".encode())
    items = expand_inputs(["-"], stdin)
    assert items[0] == str(photo)
    # ~user is that user's home; an unknown user, or a ~ inside a name, stays as written (as in a shell).
    assert [item.path for item in items[1:]] == [os.path.join(me.pw_dir, "b.jpg"), "~no-such-user-here/c.jpg",
                                                 "d~/e.jpg"]
