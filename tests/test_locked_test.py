"""The data layer of the locked test set: finding HAM10000 and the ISIC 2018 test set the same way, and checking labels.csv.

An explicitly given location (argument or environment variable) that is wrong is an error naming it and the fix,
never a fall-back to another folder; the default folders are searched in the documented order; every way
labels.csv can be broken gives one error naming the file; nothing on disk changes. All data is synthetic
(`make_synthetic`, `make_synthetic_test`) in pytest's tmp_path: the real data is never touched.
"""
from __future__ import annotations
import shutil
from pathlib import Path

import pytest

import melanoma_nbdev.data as data
from melanoma_nbdev.data import (DATASETS, DataError, data_candidates, find_data, load_dataset, load_test_set,
                                 make_synthetic, make_synthetic_test, read_test_labels)

ENVS = {name: d['env'] for name, d in DATASETS.items()}  # ham10000 -> MELANOMA_DATA, isic2018_test -> MELANOMA_TEST_DATA


@pytest.fixture(autouse=True)
def no_data_env(monkeypatch):
    "Neither dataset's environment variable from the caller steers these tests."
    for v in ENVS.values(): monkeypatch.delenv(v, raising=False)


@pytest.fixture(scope='module')
def test_set(tmp_path_factory) -> Path:
    "A synthetic test set (labels.csv + images/), read-only."
    return make_synthetic_test(tmp_path_factory.mktemp('ts') / 'isic2018_test')


@pytest.fixture
def test_copy(test_set, tmp_path) -> Path:
    "A private, writable copy of `test_set`."
    return Path(shutil.copytree(test_set, tmp_path / 'isic2018_test'))


@pytest.fixture
def fake_project(tmp_path, monkeypatch, synthetic_data, test_set):
    "A project root `tmp/proj` with both datasets in data/ and in ../shared/data/; returns a function giving each folder."
    proj = tmp_path / 'proj'
    folders = {}
    for name, src in (('ham10000', synthetic_data), ('isic2018_test', test_set)):
        folders[name, 'data'] = Path(shutil.copytree(src, proj / 'data' / name))
        folders[name, 'shared'] = Path(shutil.copytree(src, tmp_path / 'shared' / 'data' / name))
    monkeypatch.setattr(data, 'project_root', lambda *a, **k: proj)
    return folders


def assert_names(msg: str, *parts):
    for p in parts: assert str(p) in msg, f'{p!r} not in message:\n{msg}'


# ---------------------------------------------------------------- where the data is looked for

@pytest.mark.parametrize('name', list(DATASETS))
def test_search_order_is_as_documented(name, tmp_path, monkeypatch):
    monkeypatch.setattr(data, 'project_root', lambda *a, **k: tmp_path / 'proj')
    monkeypatch.setenv(ENVS[name], str(tmp_path / 'env'))
    c = data_candidates(tmp_path / 'arg', name)
    assert [w for w, *_ in c] == ['given path', f'${ENVS[name]}', 'project data/', '../shared beside the project']
    assert [p for _, p, _ in c] == [tmp_path / 'arg', tmp_path / 'env', tmp_path / 'proj' / 'data' / name, tmp_path / 'shared' / 'data' / name]
    assert [x for *_, x in c] == [True, True, False, False]


@pytest.mark.parametrize('name', list(DATASETS))
def test_defaults_in_order(name, fake_project, unchanged, tmp_path):
    with unchanged(tmp_path):
        assert find_data(None, name) == fake_project[name, 'data'].resolve()            # data/<name> first
    shutil.move(str(fake_project[name, 'data']), str(tmp_path / 'moved'))
    with unchanged(tmp_path):
        assert find_data(None, name) == fake_project[name, 'shared'].resolve()          # then ../shared/data/<name>


@pytest.mark.parametrize('name', list(DATASETS))
def test_env_and_argument_win(name, fake_project, monkeypatch, tmp_path):
    other = Path(shutil.copytree(fake_project[name, 'shared'], tmp_path / 'elsewhere'))
    monkeypatch.setenv(ENVS[name], str(other))
    assert find_data(None, name) == other.resolve()                                     # env var before data/
    assert find_data(fake_project[name, 'shared'], name) == fake_project[name, 'shared'].resolve()  # argument before env var


@pytest.mark.parametrize('name', list(DATASETS))
@pytest.mark.parametrize('how', ['missing', 'empty-folder', 'a-file'])
def test_explicit_path_wrong_is_an_error_not_a_fallback(name, how, fake_project, tmp_path, unchanged):
    bad = tmp_path / 'given'
    if how == 'empty-folder': bad.mkdir()
    if how == 'a-file': bad.write_text('not a folder')
    why = {'missing': 'does not exist', 'empty-folder': 'lacks', 'a-file': 'is a file, not a folder'}[how]
    with unchanged(tmp_path):
        with pytest.raises(DataError) as e: find_data(bad, name)
    msg = str(e.value)
    assert_names(msg, bad, why, 'only one tried', 'Fix', DATASETS[name]['files'][0])
    assert str(fake_project[name, 'data']) not in msg.split('Fix')[0]  # named in the fix at most, never used


@pytest.mark.parametrize('name', list(DATASETS))
def test_env_var_pointing_nowhere_is_an_error(name, fake_project, tmp_path, monkeypatch, unchanged):
    monkeypatch.setenv(ENVS[name], str(tmp_path / 'nowhere'))
    with unchanged(tmp_path):
        with pytest.raises(DataError) as e: find_data(None, name)
    assert_names(str(e.value), f'${ENVS[name]}', tmp_path / 'nowhere', 'does not exist', f'unset {ENVS[name]}', 'Fix')


def test_env_var_pointing_at_the_wrong_dataset(fake_project, monkeypatch):
    "$MELANOMA_TEST_DATA at a HAM10000 folder lacks labels.csv: an error, not the test set from data/."
    monkeypatch.setenv('MELANOMA_TEST_DATA', str(fake_project['ham10000', 'shared']))
    with pytest.raises(DataError) as e: load_test_set()
    assert_names(str(e.value), '$MELANOMA_TEST_DATA', fake_project['ham10000', 'shared'], 'lacks labels.csv')


@pytest.mark.parametrize('name', list(DATASETS))
def test_nothing_found_lists_every_place(name, tmp_path, monkeypatch, unchanged):
    monkeypatch.setattr(data, 'project_root', lambda *a, **k: tmp_path / 'proj')
    (tmp_path / 'proj' / 'data' / name).mkdir(parents=True)  # there, but empty
    with unchanged(tmp_path):
        with pytest.raises(DataError) as e: find_data(None, name)
    assert_names(str(e.value), 'given path: not given', f'${ENVS[name]}: not set', tmp_path / 'proj' / 'data' / name, 'lacks',
                 tmp_path / 'shared' / 'data' / name, 'does not exist', f'set {ENVS[name]}', DATASETS[name]['param'])


def test_ham10000_loader_has_no_fallback_either(fake_project, tmp_path, monkeypatch):
    monkeypatch.setenv('MELANOMA_DATA', str(tmp_path / 'gone'))
    with pytest.raises(DataError) as e: load_dataset()
    assert_names(str(e.value), '$MELANOMA_DATA', tmp_path / 'gone', 'does not exist')


# ---------------------------------------------------------------- labels.csv of the test set

def test_good_test_set(test_set, unchanged):
    with unchanged(test_set):
        ts = load_test_set(test_set)
    assert len(ts) == 28 and list(ts.columns[:3]) == ['image_id', 'dx', 'path']
    assert ts.attrs['path'] == test_set.resolve() and len(ts.attrs['labels_sha256']) == 64


HEAD = 'image_id,dx\n'
BROKEN = {  # case: (labels.csv text, what the message must say)
    'missing-column': ('image_id,label\nSYNT_0000000,akiec\n', 'lacks column(s) dx'),
    'unknown-label': (HEAD + 'SYNT_0000000,akiec\nSYNT_0000001,melanoma\n', "unknown dx ['melanoma'] on line(s) 3"),
    'empty-label': (HEAD + 'SYNT_0000000,\n', 'empty `dx` on line(s) 2'),
    'duplicate': (HEAD + 'SYNT_0000000,akiec\nSYNT_0000001,bcc\nSYNT_0000000,akiec\n', 'listed more than once, on line(s) 2, 4'),
    'duplicate-spelling': (HEAD + 'SYNT_0000000,akiec\nsynt_0000000.JPG,akiec\n', 'listed more than once'),
    'listed-but-absent': (HEAD + 'SYNT_0000000,akiec\nISIC_0034524,nv\n', "absent from"),
    'header-only': (HEAD, 'has no rows'),
    'zero-bytes': ('', 'not a readable CSV'),
}


@pytest.mark.parametrize('case', list(BROKEN))
def test_broken_labels(case, test_copy, unchanged):
    text, says = BROKEN[case]
    (test_copy / 'labels.csv').write_text(text)
    with unchanged(test_copy):
        with pytest.raises(DataError) as e: load_test_set(test_copy)
    msg = str(e.value)
    assert_names(msg, test_copy / 'labels.csv', says, 'Fix')
    assert '\n' not in msg, msg  # one line


def test_absent_image_names_id_and_line(test_copy, unchanged):
    (test_copy / 'images' / 'SYNT_0000005.jpg').unlink()
    with unchanged(test_copy):
        with pytest.raises(DataError) as e: read_test_labels(test_copy)
    assert_names(str(e.value), test_copy / 'labels.csv', "['SYNT_0000005']", 'line(s) 7', 'Fix')


@pytest.mark.parametrize('damage', ['truncated', 'not-an-image'])
def test_corrupt_image(damage, test_copy, unchanged):
    f = test_copy / 'images' / 'SYNT_0000003.jpg'
    if damage == 'truncated': f.write_bytes(f.read_bytes()[:500])
    else: f.write_text('this is text, not a JPEG')
    with unchanged(test_copy):
        with pytest.raises(DataError) as e: load_test_set(test_copy)
    msg = str(e.value)
    assert_names(msg, '1 of 28 images are unusable', f, 'corrupt or truncated', 'SHA256SUMS', 'Fix')
    assert 'metadata.csv' not in msg  # the test set's fix, not HAM10000's
