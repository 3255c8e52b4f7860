"""The evaluation building blocks of chapter 06 that other chapters and commands call: lesion-level
aggregation, the paired lesion bootstrap and its verdict, cross-fitted thresholds, and the bad input
they refuse. Small hand-made tables only: no model, no data set."""
from __future__ import annotations
from functools import partial

import numpy as np, pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from melanoma_nbdev.data import CLASSES
from melanoma_nbdev.error_analysis import (lesion_level, paired_bootstrap, lesion_bootstrap, verdict, crossfit_thresholds,
                                           threshold_at_sensitivity, operating_point, brier, classwise_ece)

MEL = CLASSES.index('mel')


def table(n_lesions: int = 40, per_lesion: int = 2, seed: int = 0) -> pd.DataFrame:
    "One row per image: `per_lesion` images per lesion, every fourth lesion a melanoma, noisy p(mel), the rest on nevus."
    rng = np.random.default_rng(seed)
    les = np.repeat(np.arange(n_lesions), per_lesion)
    is_mel = les % 4 == 0
    p_mel = np.clip(np.where(is_mel, .6, .3) + rng.normal(0, .2, len(les)), .01, .99)
    p = np.zeros((len(les), len(CLASSES))); p[:, MEL] = p_mel; p[:, CLASSES.index('nv')] = 1 - p_mel
    base = pd.DataFrame(dict(image_id=[f'i{j}' for j in range(len(les))], lesion_id=[f'l{j}' for j in les], fold=les % 3,
                             y=np.where(is_mel, MEL, CLASSES.index('nv')), dx=np.where(is_mel, 'mel', 'nv')))
    return pd.concat([base, pd.DataFrame(p, columns=[f'p_{c}' for c in CLASSES])], axis=1)


def auc(d: pd.DataFrame) -> dict: return dict(mel_auc=roc_auc_score(d.y.to_numpy() == MEL, d.p_mel.to_numpy()))


def test_lesion_of_three_images_gives_one_decision():
    d = table(n_lesions=1, per_lesion=3).assign(y=MEL, dx='mel')
    d[f'p_mel'] = [.2, .5, .9]; d['p_nv'] = 1 - d.p_mel
    les = lesion_level(d)
    assert len(les) == 1 and les.n_images.iloc[0] == 3
    assert les.p_mel.iloc[0] == pytest.approx(1.6 / 3) and les.pred_dx.iloc[0] == 'mel'


def test_paired_bootstrap_of_identical_predictions_is_zero():
    d = lesion_level(table())
    res = paired_bootstrap(d, d.copy(), auc, n=100, seed=1)
    assert res.loc['mel_auc', ['difference', 'lo', 'hi']].tolist() == [0, 0, 0]
    assert res.loc['mel_auc', 'verdict'] == 'no measurable difference'


def test_paired_bootstrap_names_the_better_side_only_when_the_ci_excludes_0():
    d = lesion_level(table(n_lesions=80))
    noisy = d.assign(p_mel=np.random.default_rng(5).random(len(d)))  # B: a random score
    res = paired_bootstrap(d, noisy, auc, n=200, seed=0, names=('model', 'random'))
    assert res.loc['mel_auc', 'lo'] > 0 and res.loc['mel_auc', 'verdict'] == 'model better'
    assert verdict(-.01, .02) == 'no measurable difference' and verdict(-.3, -.1, lower_better=True) == 'A better'


def test_paired_bootstrap_refuses_misaligned_tables():
    d = table()
    with pytest.raises(ValueError, match='same rows in the same order'): lesion_bootstrap(d, auc, n=5, other=d.iloc[::-1])


def test_crossfit_thresholds_never_use_the_scored_fold():
    d = table(n_lesions=60)
    m, p, f = d.y.to_numpy() == MEL, d.p_mel.to_numpy(), d.fold.to_numpy()
    choose = partial(threshold_at_sensitivity, sensitivity=.9)
    rows, by_fold = crossfit_thresholds(m, p, f, choose)
    m2 = m.copy(); m2[f == 2] = ~m2[f == 2]  # fold 2's labels flipped
    assert crossfit_thresholds(m2, p, f, choose)[1][2] == by_fold[2]
    assert by_fold[0] == choose(m[f != 0], p[f != 0])['threshold'] and (rows[f == 0] == by_fold[0]).all()
    op = operating_point(m, p, rows)
    assert op['sensitivity'] == pytest.approx((p[m] >= rows[m]).mean())


def test_brier_and_classwise_ece_by_hand():
    y, p = np.array([0, 1]), np.array([[.8, .2], [.4, .6]])
    assert brier(y, p) == pytest.approx(.2)
    assert classwise_ece(y, p, 10, ['a', 'b']).tolist() == pytest.approx([.3, .3])
