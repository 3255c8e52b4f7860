"""Shared fixtures: synthetic HAM10000-layout data built in pytest's temporary folders.

Nothing here reads or writes the real data (../shared, data/ham10000); every test gets its data
from `melanoma_nbdev.data.make_synthetic`, so the suite runs where HAM10000 is absent.
"""
from __future__ import annotations
import hashlib, shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from melanoma_nbdev.data import make_synthetic


@pytest.fixture(scope='session')
def synthetic_data(tmp_path_factory) -> Path:
    "A fresh synthetic dataset (metadata.csv + images/), made once per session. Treat it as read-only."
    return make_synthetic(tmp_path_factory.mktemp('synthetic') / 'ham10000')


@pytest.fixture(scope='session')
def tiny_ensemble(tmp_path_factory) -> tuple:
    """A 2-fold tf_efficientnet_lite0 ensemble trained for one epoch on 32 px synthetic images (28 lesions), made once per
    session: (its configuration folder `kfold/tf_efficientnet_lite0_ce`, the data table). Copy it into a run; treat it as read-only."""
    from melanoma_nbdev.data import load_dataset, add_folds
    from melanoma_nbdev.profiles import load_profile
    from melanoma_nbdev.kfold import run_kfold
    root = tmp_path_factory.mktemp('tiny')
    df = load_dataset(make_synthetic(root/'syn', n_lesions=28)).pipe(add_folds, 2, 0)
    cfg = root/'kfold'/'tf_efficientnet_lite0_ce'
    run_kfold(df, load_profile('smoke', img_size=32, bs=16, arch='tf_efficientnet_lite0'), cfg, tta=False, quiet=True)
    return cfg, df


@pytest.fixture
def dataset(synthetic_data, tmp_path) -> Path:
    "A private, writable copy of `synthetic_data` for a test that breaks something in it."
    return Path(shutil.copytree(synthetic_data, tmp_path / 'ham10000'))


@pytest.fixture
def clean_env(monkeypatch):
    "Keep the caller's MELANOMA_DATA / MELANOMA_SETTINGS from steering `find_data` and `load_profile`."
    monkeypatch.delenv('MELANOMA_DATA', raising=False)
    monkeypatch.delenv('MELANOMA_SETTINGS', raising=False)


def tree_snapshot(root: Path | str) -> dict | None:
    "Every file and folder under `root` (or `root` itself if a file) with size, mtime and sha256; None if absent."
    root = Path(root)
    if not root.exists(): return None
    entries = [root] if root.is_file() else sorted(root.rglob('*'))
    snap = {}
    for p in entries:
        key = '.' if p == root else str(p.relative_to(root))
        if p.is_dir(): snap[key] = 'dir'
        else:
            st = p.stat()
            snap[key] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
    return snap


@pytest.fixture
def unchanged():
    """Context manager asserting that nothing under the given paths was added, lost or modified:

        with unchanged(folder):
            with pytest.raises(DataError): load_dataset(folder)
    """
    @contextmanager
    def _unchanged(*roots):
        before = {str(r): tree_snapshot(r) for r in roots}
        yield
        after = {str(r): tree_snapshot(r) for r in roots}
        for r in before:
            b, a = before[r], after[r]
            if b == a: continue
            if b is None or a is None: pytest.fail(f'{r} was {"created" if b is None else "deleted"}')
            diff = sorted(k for k in set(b) | set(a) if b.get(k) != a.get(k))
            pytest.fail(f'files under {r} were added, lost or modified: {diff[:10]}')
    return _unchanged
