"""Bad input: every way the data folder, metadata.csv, an image or a run profile can be wrong.

Each case checks (a) the specific exception type, (b) that the message names the offending
file / CSV line / parameter and says how to fix it (or lists the valid choices), and (c) that
nothing on disk was lost or modified. Documented conversions (grey/palette/CMYK/RGBA images,
empty age, empty sex) are checked as conversions, not errors.

All data is synthetic (`make_synthetic`) in pytest's tmp_path; the real HAM10000 is never touched.
"""
from __future__ import annotations
import configparser, csv, inspect, locale, os, subprocess, sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from melanoma_nbdev.data import (CLASSES, COLUMNS, DataError, check_image, check_images, find_data,
                                 load_dataset, make_synthetic, read_metadata)
from melanoma_nbdev.profiles import DEVICES, PROFILE_KEYS, ProfileError, load_profile, project_root

pytestmark = pytest.mark.usefixtures('clean_env')

FIX = "Fix"


# ---------------------------------------------------------------- helpers

def read_rows(folder: Path) -> tuple[list, list]:
    "Header and data rows of folder/metadata.csv, as strings."
    with open(folder / 'metadata.csv', newline='') as f: rows = list(csv.reader(f))
    return rows[0], rows[1:]

def write_rows(folder: Path, header: list, rows: list):
    with open(folder / 'metadata.csv', 'w', newline='') as f: csv.writer(f, lineterminator='\n').writerows([header, *rows])

def set_cell(folder: Path, row: int, col: str, value: str) -> int:
    "Set data row `row` (0-based) of column `col`; returns that row's line number in the CSV (header = 1)."
    header, rows = read_rows(folder)
    rows[row][header.index(col)] = value
    write_rows(folder, header, rows)
    return row + 2

def image_path(folder: Path, row: int) -> Path:
    "The image file of data row `row`."
    _, rows = read_rows(folder)
    return folder / 'images' / f'{rows[row][1]}.jpg'

def rgb_of(fn: Path) -> Image.Image:
    with Image.open(fn) as im: return im.convert('RGB')

def assert_names(msg: str, *parts):
    for p in parts: assert str(p) in msg, f'{p!r} not in message:\n{msg}'


# ---------------------------------------------------------------- the data folder

def test_missing_folder(tmp_path, unchanged):
    missing = tmp_path / 'no_such_folder'
    with unchanged(tmp_path):
        for f in (find_data, load_dataset):
            with pytest.raises(DataError) as e: f(missing)
            assert_names(str(e.value), missing, 'does not exist', FIX)
    assert not missing.exists()


def test_empty_folder(tmp_path, unchanged):
    empty = tmp_path / 'empty'; empty.mkdir()
    with unchanged(tmp_path):
        with pytest.raises(DataError) as e: load_dataset(empty)
        assert_names(str(e.value), empty, 'metadata.csv', FIX)
        with pytest.raises(DataError) as e: read_metadata(empty)
        assert_names(str(e.value), empty / 'metadata.csv', 'does not exist', FIX)
    assert list(empty.iterdir()) == []


@pytest.mark.parametrize('content', [b'', b'lesion_id,image_id,dx,dx_type,age,sex,localization\n', b'\xff\xfe\x00garbage\xc3\x28\n'],
                         ids=['zero-bytes', 'header-only', 'not-utf8'])
def test_empty_or_unreadable_metadata(dataset, unchanged, content):
    (dataset / 'metadata.csv').write_bytes(content)
    with unchanged(dataset):
        with pytest.raises(DataError) as e: load_dataset(dataset)
    assert_names(str(e.value), dataset / 'metadata.csv', FIX)


# ---------------------------------------------------------------- metadata.csv

@pytest.mark.parametrize('col', ['dx', 'image_id', 'age'])
def test_metadata_missing_column(dataset, unchanged, col):
    header, rows = read_rows(dataset)
    i = header.index(col)
    write_rows(dataset, [h for h in header if h != col], [[v for j, v in enumerate(r) if j != i] for r in rows])
    with unchanged(dataset):
        with pytest.raises(DataError) as e: load_dataset(dataset)
    msg = str(e.value)
    assert_names(msg, dataset / 'metadata.csv', f'lacks column(s) {col}', FIX, ', '.join(COLUMNS))


def test_unknown_dx(dataset, unchanged):
    line = set_cell(dataset, 5, 'dx', 'melanoma')
    with unchanged(dataset):
        with pytest.raises(DataError) as e: read_metadata(dataset)
    msg = str(e.value)
    assert_names(msg, dataset / 'metadata.csv', "'melanoma'", f'line(s) {line}', FIX, ', '.join(CLASSES))


def test_duplicate_image_id(dataset, unchanged):
    header, rows = read_rows(dataset)
    rows[7][1] = rows[3][1]
    write_rows(dataset, header, rows)
    with unchanged(dataset):
        with pytest.raises(DataError) as e: read_metadata(dataset)
    assert_names(str(e.value), dataset / 'metadata.csv', 'duplicate image_id', rows[3][1], f'line(s) {3+2}, {7+2}', FIX)


def test_nan_age_is_kept(dataset, unchanged):
    "Documented conversion: an empty age stays NaN and the row is kept."
    n = len(read_rows(dataset)[1])
    set_cell(dataset, 4, 'age', '')
    with unchanged(dataset):
        df = read_metadata(dataset)
        full = load_dataset(dataset)
    assert len(df) == len(full) == n
    assert np.isnan(df.age.iloc[4]) and np.isnan(full.age.iloc[4])
    assert df.age.dtype.kind == 'f'


@pytest.mark.parametrize('age', ['forty', '150', '-1'])
def test_bad_age(dataset, unchanged, age):
    line = set_cell(dataset, 6, 'age', age)
    with unchanged(dataset):
        with pytest.raises(DataError) as e: read_metadata(dataset)
    assert_names(str(e.value), dataset / 'metadata.csv', repr(age), f'line(s) {line}', '0-120', 'Fix it')


def test_empty_sex_becomes_unknown(dataset, unchanged):
    "Documented conversion: an empty sex or localization becomes 'unknown', the row is kept."
    header, rows = read_rows(dataset)
    rows[2][header.index('sex')] = ''
    rows[3][header.index('localization')] = ''
    write_rows(dataset, header, rows)
    with unchanged(dataset): df = read_metadata(dataset)
    assert len(df) == len(rows)
    assert df.sex.iloc[2] == 'unknown' and df.localization.iloc[3] == 'unknown'
    assert df.sex.notna().all() and df.localization.notna().all()


def test_line_number_after_blank_line(dataset, unchanged):
    lines = (dataset / 'metadata.csv').read_text().splitlines()
    lines.insert(2, '')                                       # blank line 3
    f = lines[5].split(','); f[COLUMNS.index('age')] = '150'; lines[5] = ','.join(f)   # bad age on line 6
    (dataset / 'metadata.csv').write_text('\n'.join(lines) + '\n')
    with unchanged(dataset):
        with pytest.raises(DataError) as e: read_metadata(dataset)
    assert 'line(s) 6 ' in str(e.value), str(e.value)


# ---------------------------------------------------------------- images

def test_listed_image_missing(dataset, unchanged):
    fn = image_path(dataset, 3); fn.unlink()
    n = len(read_rows(dataset)[1])
    with unchanged(dataset):
        with pytest.raises(DataError) as e: load_dataset(dataset)
        assert_names(str(e.value), f'1 of {n}', fn, 'missing', FIX)
        with pytest.raises(DataError) as e: load_dataset(dataset, check=False)
        assert_names(str(e.value), fn, 'missing', FIX)
        with pytest.raises(DataError) as e: check_image(fn)
        assert_names(str(e.value), fn, 'missing', FIX)


@pytest.mark.parametrize('damage', ['truncated', 'zero-bytes', 'not-an-image'])
def test_corrupt_image(dataset, unchanged, damage):
    fn = image_path(dataset, 0)
    data = fn.read_bytes()
    fn.write_bytes({'truncated': data[:len(data)//2], 'zero-bytes': b'', 'not-an-image': b'<html>404</html>'}[damage])
    with unchanged(dataset):
        with pytest.raises(DataError) as e: check_image(fn)
        assert_names(str(e.value), fn, 'corrupt or truncated', FIX)
        with pytest.raises(DataError) as e: load_dataset(dataset)
        assert_names(str(e.value), '1 of', fn, FIX)


def test_png_under_jpg_name_is_accepted(dataset, unchanged):
    """A PNG named .jpg decodes exactly as training will read it (PIL and fastai go by content, not name),
    so it is accepted, not refused; its RGB pixels come through unchanged."""
    from fastai.vision.core import PILImage
    fn = image_path(dataset, 0)
    img = rgb_of(fn); img.save(fn, format='PNG')
    with Image.open(fn) as im: assert im.format == 'PNG'
    with unchanged(dataset):
        info = check_image(fn)
        df = load_dataset(dataset)
        loaded = PILImage.create(fn)
    assert info['mode'] == 'RGB' and (info['width'], info['height']) == img.size
    assert df['mode'].iloc[0] == 'RGB'
    assert np.array_equal(np.asarray(loaded), np.asarray(img))


def _as_mode(img: Image.Image, mode: str, fn: Path):
    "Save `img` in pixel `mode` at `fn` (JPEG where JPEG can hold the mode, else PNG under the .jpg name)."
    if mode == 'RGBA':
        im = img.convert('RGBA'); im.putalpha(Image.linear_gradient('L').resize(img.size)); im.save(fn, format='PNG')
    elif mode == 'P': img.convert('P', palette=Image.Palette.ADAPTIVE, colors=64).save(fn, format='PNG')
    else: img.convert(mode).save(fn, format='JPEG', quality=90)


@pytest.mark.parametrize('mode', ['RGBA', 'L', 'CMYK', 'P'])
def test_non_rgb_modes_are_converted(dataset, unchanged, mode):
    "Documented conversion: check_image records the original mode; fastai's PILImage loads 3-channel RGB."
    from fastai.vision.core import PILImage
    fn = image_path(dataset, 1)
    img = rgb_of(fn); _as_mode(img, mode, fn)
    with Image.open(fn) as im: assert im.mode == mode      # the file really is in that mode
    with unchanged(dataset):
        info = check_image(fn)
        df = load_dataset(dataset)
        loaded = PILImage.create(fn)
    assert info['mode'] == mode and (info['width'], info['height']) == img.size
    assert df['mode'].iloc[1] == mode and (df['mode'].drop(df.index[1]) == 'RGB').all()
    assert loaded.mode == 'RGB'
    a = np.asarray(loaded)
    assert a.shape == (img.height, img.width, 3) and a.dtype == np.uint8


def test_16bit_image_is_refused(dataset, unchanged):
    fn = image_path(dataset, 2)
    a = (np.asarray(rgb_of(fn).convert('L'), dtype=np.uint16) * 257)
    Image.fromarray(a).save(fn, format='PNG')
    with Image.open(fn) as im: assert im.mode == 'I;16'
    with unchanged(dataset):
        with pytest.raises(DataError) as e: check_image(fn)
        assert_names(str(e.value), fn, "'I;16'", 'Fix: save it as 8-bit RGB JPEG')
        with pytest.raises(DataError) as e: load_dataset(dataset)
        assert_names(str(e.value), '1 of', fn, "'I;16'", FIX)


def test_over_small_pixel_limit(dataset, unchanged):
    fn = image_path(dataset, 0)
    w, h = check_image(fn)['width'], check_image(fn)['height']
    n = len(read_rows(dataset)[1])
    with unchanged(dataset):
        with pytest.raises(DataError) as e: check_image(fn, max_pixels=1000)
        assert_names(str(e.value), fn, f'{w}x{h}', 'over max_pixels=1,000', FIX)
        with pytest.raises(DataError) as e: load_dataset(dataset, max_pixels=w*h - 1)
        assert_names(str(e.value), f'{n} of {n}', fn, f'over max_pixels={w*h-1:,}', FIX)
    assert check_image(fn, max_pixels=w*h)['width'] == w          # the limit is inclusive


@pytest.fixture(scope='module')
def huge_pngs(tmp_path_factory) -> dict:
    """Genuinely large but tiny-on-disk PNGs (1-bit zeros): 144 Mpx (over our default 25 Mpx limit) and
    196 Mpx (also over PIL's own 179 Mpx decompression-bomb limit)."""
    d = tmp_path_factory.mktemp('huge')
    out = {}
    for side in (12000, 14000):
        fn = d / f'huge_{side}.png'; Image.new('1', (side, side)).save(fn); out[side] = fn
    return out


@pytest.mark.parametrize('side', [12000, 14000])
def test_huge_sparse_image_default_limit(dataset, unchanged, huge_pngs, side):
    fn = image_path(dataset, 0)
    fn.write_bytes(huge_pngs[side].read_bytes())
    assert fn.stat().st_size < 100_000                            # small file, huge image: a decompression bomb
    with unchanged(dataset):
        with pytest.raises(DataError) as e: check_image(fn)
        assert_names(str(e.value), fn, f'{side*side:,}' if side == 12000 else f'{side*side}', FIX)
        with pytest.raises(DataError) as e: load_dataset(dataset)
        assert_names(str(e.value), '1 of', fn, FIX)


def test_check_images_reports_all_bad_files(dataset, unchanged):
    header, rows = read_rows(dataset)
    df = read_metadata(dataset)
    a, b = image_path(dataset, 1), image_path(dataset, len(rows) - 1)
    a.write_bytes(a.read_bytes()[:300]); b.unlink()
    with unchanged(dataset):
        with pytest.raises(DataError) as e: check_images(df, dataset)
    msg = str(e.value)
    assert_names(msg, f'2 of {len(df)} images are unusable', a, b, 'corrupt or truncated', 'missing', FIX)


# ---------------------------------------------------------------- the command line

def test_cli_missing_folder(tmp_path, unchanged):
    exe = Path(sys.executable).parent / 'melanoma-data'
    assert exe.is_file(), f'console script not installed at {exe}'
    missing = tmp_path / 'nope'
    # `action` is a positional argument if it has no default, else fastcore's call_parse makes it `--action`
    from melanoma_nbdev.data import melanoma_data
    positional = inspect.signature(melanoma_data).parameters['action'].default is inspect.Parameter.empty
    argv = [str(exe), *(['check'] if positional else ['--action', 'check']), '--path', str(missing)]
    env = {k: v for k, v in os.environ.items() if k not in ('MELANOMA_DATA', 'MELANOMA_SETTINGS')}
    with unchanged(tmp_path):
        r = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert r.stderr.startswith('error:'), out
    assert 'Traceback' not in out
    assert_names(r.stderr, missing, FIX)


# ---------------------------------------------------------------- run profiles

SETTINGS = Path(__file__).resolve().parents[1] / 'settings.ini'


@pytest.fixture
def settings_untouched(unchanged):
    "The project's settings.ini is read, never written."
    assert project_root() is not None
    with unchanged(SETTINGS): yield


def test_wrong_profile_name(settings_untouched):
    with pytest.raises(ProfileError) as e: load_profile('smok')
    assert_names(str(e.value), "'smok'", 'settings.ini', 'smoke', 'full')


def test_unknown_parameter(settings_untouched):
    with pytest.raises(ProfileError) as e: load_profile('smoke', learning_rate=0.01)
    assert_names(str(e.value), '`learning_rate`', 'Valid keys', ', '.join(PROFILE_KEYS))


@pytest.mark.parametrize('key,value', [('epochs', 'three'), ('epochs', 2.5), ('bs', [32]), ('max_pixels', '25e6')],
                         ids=['epochs=three', 'epochs=2.5', 'bs=list', 'max_pixels=25e6'])
def test_wrong_typed_parameter(settings_untouched, key, value):
    with pytest.raises(ProfileError) as e: load_profile('smoke', **{key: value})
    assert_names(str(e.value), f'`{key}`', 'is not int', f'{key}=')


def test_bool_parameter_is_refused(settings_untouched):
    with pytest.raises(ProfileError): load_profile('smoke', epochs=True)


@pytest.mark.parametrize('key,value,need', [('folds', 1, '>= 2'), ('device', 'tpu', ', '.join(DEVICES)),
                                            ('img_size', 16, '>= 32'), ('n_images', -1, '>= 0'), ('bs', 0, '>= 1')])
def test_out_of_range_parameter(settings_untouched, key, value, need):
    with pytest.raises(ProfileError) as e: load_profile('smoke', **{key: value})
    assert_names(str(e.value), "profile 'smoke'", f'`{key}` = {value!r}', need)


def test_empty_archs_names_archs(settings_untouched):
    with pytest.raises(ProfileError) as e: load_profile('smoke', archs='')
    assert '`archs`' in str(e.value), str(e.value)


GOOD_SMOKE = SETTINGS.read_text() if SETTINGS.is_file() else ''

BROKEN_SETTINGS = {
    'missing-key': ('[DEFAULT]\nn_images = 0\nimg_size = 64\nbs = 8\nepochs = 1\nfolds = 2\narch = a\narchs = a\ndevice = cpu\nmax_pixels = 100\naug = none\nlr = 0\nlr_mult = 100\n[smoke]\n',
                    ['lacks seed', '[smoke]']),
    'non-integer': (GOOD_SMOKE.replace('[smoke]\nn_images = 300', '[smoke]\nn_images = three hundred'),
                    ['[smoke] key `n_images`', "'three hundred'", 'is not int']),
    'not-ini': ('This is a README, not a settings file.\nepochs: 3\n', ['not a valid UTF-8 INI file', 'line: 1']),
    'duplicate-section': ('[smoke]\nbs = 1\n[smoke]\nbs = 2\n', ['not a valid UTF-8 INI file', 'smoke']),
}


@pytest.mark.parametrize('case', list(BROKEN_SETTINGS))
def test_broken_settings_ini(tmp_path, unchanged, settings_untouched, case):
    text, expected = BROKEN_SETTINGS[case]
    assert case != 'non-integer' or 'three hundred' in text          # the project file still has the line we break
    fn = tmp_path / 'settings.ini'; fn.write_text(text)
    with unchanged(tmp_path):
        with pytest.raises(ProfileError) as e: load_profile('smoke', path=fn)
    assert_names(str(e.value), fn, *expected)


def test_missing_settings_ini(tmp_path, unchanged):
    fn = tmp_path / 'settings.ini'
    with unchanged(tmp_path):
        with pytest.raises(ProfileError) as e: load_profile('smoke', path=fn)
    assert_names(str(e.value), fn, 'MELANOMA_SETTINGS')
    assert not fn.exists()


def test_settings_inline_comment_with_percent(tmp_path, unchanged):
    "Inline comments are allowed in settings.ini, and '%' has no special meaning (no interpolation)."
    fn = tmp_path / 'settings.ini'
    fn.write_text(GOOD_SMOKE.replace('[smoke]\nn_images = 300', '[smoke]\nn_images = 300  # 3% of HAM10000'))
    with unchanged(tmp_path):
        assert load_profile('smoke', path=fn).n_images == 300


@pytest.mark.skipif('utf' not in locale.getpreferredencoding(False).lower().replace('-', ''),
                    reason='the bug shows only where the locale encoding is UTF-8')
def test_settings_not_utf8(tmp_path, unchanged):
    fn = tmp_path / 'settings.ini'
    fn.write_bytes(('# Größe der Bilder\n' + GOOD_SMOKE).encode('latin-1'))
    with unchanged(tmp_path):
        with pytest.raises(ProfileError) as e: load_profile('smoke', path=fn)
    assert_names(str(e.value), fn)
