"""The console scripts `melanoma-predict` and `melanoma-evaluate` (nbs/08_predict.ipynb) on a tiny run
trained here, with fastai, on synthetic data (so the suite runs where HAM10000 is absent).

The end-to-end tests run the installed scripts as a user would (a subprocess each); the bad-input tests call
the same code in-process (`run_predict`, `run_evaluate`), which is what the scripts wrap.
"""
import json, re, shutil, subprocess, sys
from pathlib import Path

import numpy as np, pandas as pd, pytest
from PIL import Image
from sklearn.metrics import accuracy_score, roc_auc_score

from melanoma_nbdev.data import CLASSES
from melanoma_nbdev.kfold import FoldEnsemble, ensemble_predict
from melanoma_nbdev.profiles import save_json
from melanoma_nbdev.predict import run_predict, run_evaluate
from melanoma_nbdev.scoring import DISCLAIMER, NOT_ASSESSED, RISK_RULE_FILE, CommandError, risk_rule, risk_level
from melanoma_nbdev.risk import RISK_LEVELS, RISK_SENSITIVITY

BIN = Path(sys.executable).parent


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_ensemble):
    "A run folder with the session's tiny ensemble (conftest's `tiny_ensemble`), and its data."
    cfg, df = tiny_ensemble
    run = tmp_path_factory.mktemp('cli')/'runs'/'tiny'
    shutil.copytree(cfg.parent, run/'kfold')
    save_json(dict(profile='smoke', smoke=True, git_commit='test', date_utc='2026-01-01T00:00:00+00:00', main='tf_efficientnet_lite0 ce'),
              run/'results'/'kfold_metrics.json')
    return run, df


def cli(name, *args):
    "Run an installed console script; its CompletedProcess."
    return subprocess.run([str(BIN/name), *map(str, args)], capture_output=True, text=True, timeout=300)


def labels_csv(path: Path, text: str) -> Path:
    path.write_text(text); return path


def image_folder(df, dest: Path, n: int) -> Path:
    "A folder holding copies of the first `n` images of `df`, as an external set would."
    dest.mkdir(parents=True)
    for p in df.path.iloc[:n]: shutil.copy(p, dest)
    return dest


def test_predict_end_to_end(trained, tmp_path):
    run, df = trained
    imgs, out = df.path.iloc[:3].tolist(), tmp_path/'pred'
    r = cli('melanoma-predict', *imgs, '--run', run, '--out', out, '--gradcam')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == DISCLAIMER and lines[1].startswith('warning: the models come from a SMOKE run') and lines[2] == risk_rule(None)   # the run has no risk_rule.json: one line says so, no level is made up
    for line, img in zip(lines[3:6], imgs):
        assert re.fullmatch(rf'{re.escape(img)}: (\w+) [01]\.\d\d, (\w+) [01]\.\d\d, (\w+) [01]\.\d\d \| risk {re.escape(NOT_ASSESSED)}', line), line
    pred = pd.read_csv(out/'predictions.csv')
    probs = pred[[f'p_{c}' for c in CLASSES]].to_numpy()
    # the script's probabilities are the fold ensemble's, as chapter 05 computes them
    ref = ensemble_predict(FoldEnsemble(run/'kfold'/'tf_efficientnet_lite0_ce'), imgs)[CLASSES].to_numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    assert pred.top1.tolist() == [CLASSES[i] for i in probs.argmax(1)] and pred.risk.tolist() == risk_level(probs, None)
    assert (pred.notice == DISCLAIMER).all() and pred.model_warning.str.contains('SMOKE run').all()
    for png in pred.gradcam:
        with Image.open(png) as im: assert im.info['Disclaimer'] == DISCLAIMER and im.width == 200


def test_predict_applies_the_runs_risk_rule(trained, tmp_path):
    "With chapter 06's risk_rule.json in the run, the levels are the rule's on the ensemble's probabilities, printed and in the CSV."
    run, df = trained
    imgs, fn = df.path.iloc[:4].tolist(), run/RISK_RULE_FILE
    probs = ensemble_predict(FoldEnsemble(run/'kfold'/'tf_efficientnet_lite0_ce'), imgs)[CLASSES].to_numpy()
    pm = probs[:, CLASSES.index('mel')]
    rule = dict(t_mel=float(np.median(pm)), t_ka=0.0, levels=list(RISK_LEVELS), target_sensitivity=dict(RISK_SENSITIVITY), unit='image')   # half High, the rest Moderate
    save_json(rule, fn)
    try:
        r = cli('melanoma-predict', *imgs, '--run', run, '--out', tmp_path/'pred')
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert lines[2] == risk_rule(dict(rule, file=str(fn))) and lines[2].startswith('Risk: High (melanoma suspected) if p(mel) >= ')
        pred = pd.read_csv(tmp_path/'pred'/'predictions.csv')
        assert pred.risk.tolist() == [RISK_LEVELS[0] if p >= rule['t_mel'] else RISK_LEVELS[1] for p in pm]
        assert all(line.endswith(f'| risk {lv}') for line, lv in zip(lines[3:7], pred.risk))
        save_json(dict(rule, unit='lesion (mean plain probabilities of its images)'), fn)   # an earlier run's rule, chosen on lesion means
        r = cli('melanoma-predict', *imgs, '--run', run, '--out', tmp_path/'pred_les')
        assert r.returncode != 0 and "chosen on unit 'lesion" in r.stderr and str(fn) in r.stderr and 'Traceback' not in r.stderr, r.stderr
        assert not (tmp_path/'pred_les').exists(), 'refused before anything is written'
    finally: fn.unlink()


def test_predict_bad_inputs_name_each_file(trained, tmp_path):
    run, df = trained
    (tmp_path/'text.jpg').write_text('not an image')
    (tmp_path/'cut.jpg').write_bytes(Path(df.path.iloc[0]).read_bytes()[:1500])
    (tmp_path/'empty').mkdir()
    bad = [tmp_path/'text.jpg', tmp_path/'cut.jpg', tmp_path/'empty', tmp_path/'absent.png']
    r = cli('melanoma-predict', df.path.iloc[0], *bad, '--run', run, '--out', tmp_path/'out')
    assert r.returncode == 1 and r.stdout.startswith(DISCLAIMER) and 'Traceback' not in r.stderr
    assert '4 unusable input(s); nothing was predicted' in r.stderr
    for f, why in zip(bad, ('is not an image', 'is corrupt or truncated', 'folder without image files', 'does not exist')):
        assert f'{f} {why}' in r.stderr or f'{f} is a {why}' in r.stderr, (f, r.stderr)
    assert not (tmp_path/'out').exists()
    big = tmp_path/'big.png'; Image.new('RGB', (400, 300)).save(big)
    with pytest.raises(CommandError, match=r'big.png is 400x300 = 120,000 pixels, over max_pixels=100,000.*Fix:'):
        run_predict([big], run, tmp_path/'out', max_pixels=100_000)


def test_scripts_without_a_trained_run(trained, tmp_path):
    run, df = trained
    (tmp_path/'empty_run').mkdir()
    r = cli('melanoma-predict', df.path.iloc[0], '--run', tmp_path/'empty_run')
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert 'holds no trained fold models' in r.stderr and 'make report' in r.stderr
    folder = image_folder(df, tmp_path/'ext', 2)
    lab = labels_csv(tmp_path/'l.csv', 'image_id,dx\n' + ''.join(f'{Path(p).stem},{d}\n' for p, d in zip(df.path[:2], df.dx[:2])))
    r = cli('melanoma-evaluate', folder, '--labels', lab, '--run', tmp_path/'missing_run')
    assert r.returncode == 1 and 'not found' in r.stderr and 'make report' in r.stderr and 'Traceback' not in r.stderr


def test_evaluate_end_to_end(trained, tmp_path):
    run, df = trained
    folder = image_folder(df, tmp_path/'ext', 20)
    lab = labels_csv(folder/'labels.csv', 'image_id,dx,lesion_id\n' + ''.join(f'{r.image_id}.jpg,{r.dx},{r.lesion_id}\n' for r in df.iloc[:18].itertuples()))
    r = cli('melanoma-evaluate', folder, '--labels', lab, '--run', run, '--n-boot', 200)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(DISCLAIMER)
    out, = (run/'evaluations').glob('ext-*')   # the default: beside the models, a new folder per evaluation
    assert re.fullmatch(r'ext-[0-9a-f]{8}-\d{8}T\d{6}Z', out.name) and f'written: {out/"metrics.json"}' in r.stdout
    res = json.loads((out/'metrics.json').read_text())
    assert res['notice'] == DISCLAIMER and res['data']['task'] == 'dx' and res['data']['n_unlabelled'] == 2 and res['metrics']['n'] == 18
    # the metrics are scikit-learn's on the ensemble's probabilities of exactly the labelled images
    y = df.dx.iloc[:18].map(CLASSES.index).to_numpy()
    p = ensemble_predict(FoldEnsemble(run/'kfold'/'tf_efficientnet_lite0_ce'), df.path.iloc[:18].tolist())[CLASSES].to_numpy()
    assert res['metrics']['accuracy'] == pytest.approx(accuracy_score(y, p.argmax(1)))
    assert res['metrics']['mel_auc'] == pytest.approx(roc_auc_score(y == CLASSES.index('mel'), p[:, CLASSES.index('mel')]), abs=1e-6)
    assert set(res['per_class']) == set(CLASSES) and res['models']['folds'] == [0, 1] and res['models']['smoke'] is True
    summary = (out/'summary.md').read_text()
    assert DISCLAIMER in summary and 'SMOKE run' in summary and '| balanced_accuracy |' in summary
    b = res['bootstrap']   # lesion_id given: the CIs resample lesions
    assert (b['level'], b['n_units'], b['n_resamples']) == ('lesion', df.lesion_id.iloc[:18].nunique(), 200)
    assert b['ci']['accuracy']['lo'] <= res['metrics']['accuracy'] <= b['ci']['accuracy']['hi']
    assert f"percentile bootstrap over {b['n_units']} lesions" in summary


def test_evaluate_melanoma_labels_without_melanomas(trained, tmp_path):
    run, df = trained
    folder = image_folder(df, tmp_path/'ext', 6)
    others = df.iloc[:6][df.dx.iloc[:6].astype(str) != 'mel']
    lab = labels_csv(tmp_path/'m.csv', 'image_id,melanoma\n' + ''.join(f'{i},0\n' for i in others.image_id))
    res = run_evaluate(folder, lab, run, tmp_path/'out', echo=lambda s: None, n_boot=50)
    m = res['metrics']
    assert m['n'] == len(others) and m['n_melanoma'] == 0 and m['mel_auc'] is None and m['mel_sensitivity'] is None
    assert 0 <= m['mel_specificity'] <= 1 and res['per_class'] is None


BAD_LABELS = {
    'unknown column': ('image_id,dx,comment\n{a},nv,x\n', 'unknown column(s) comment'),
    'no label column': ('image_id\n{a}\n', 'has columns image_id.'),
    'no image_id': ('file,dx\n{a},nv\n', 'unknown column(s) file'),
    'both labels': ('image_id,dx,melanoma\n{a},nv,0\n', 'exactly one of dx'),
    'unknown dx': ('image_id,dx\n{a},nv\n{b},melanoma\n', "unknown dx ['melanoma'] on line(s) 3"),
    'melanoma not 0/1': ('image_id,melanoma\n{a},1\n{b},yes\n', "unknown melanoma ['yes'] on line(s) 3"),
    'duplicate image': ('image_id,dx\n{a},nv\n{a},nv\n', 'duplicate image_id'),
    'listed but absent': ('image_id,dx\n{a},nv\nISIC_9999999,mel\n', 'absent from'),
    'no rows': ('image_id,dx\n', 'has no rows'),
}


@pytest.mark.parametrize('case', BAD_LABELS)
def test_evaluate_bad_labels(trained, tmp_path, case):
    run, df = trained
    folder = image_folder(df, tmp_path/'ext', 2)
    text, msg = BAD_LABELS[case]
    lab = labels_csv(tmp_path/'labels.csv', text.format(a=df.image_id.iloc[0], b=df.image_id.iloc[1]))
    with pytest.raises(CommandError) as e: run_evaluate(folder, lab, run, tmp_path/'out', echo=lambda s: None)
    assert msg in str(e.value) and str(lab) in str(e.value) and 'Fix:' in str(e.value)
    assert not (tmp_path/'out').exists()


def test_evaluate_bad_folders_and_images(trained, tmp_path):
    run, df = trained
    lab = labels_csv(tmp_path/'l.csv', f'image_id,dx\n{df.image_id.iloc[0]},nv\n')
    (tmp_path/'empty').mkdir()
    for folder, msg in ((tmp_path/'empty', 'holds no image files'), (tmp_path/'nowhere', 'not found')):
        with pytest.raises(CommandError, match=msg): run_evaluate(folder, lab, run, tmp_path/'out', echo=lambda s: None)
    with pytest.raises(CommandError, match='Labels file .* not found'): run_evaluate(tmp_path, tmp_path/'none.csv', run, echo=lambda s: None)
    folder = image_folder(df, tmp_path/'ext', 1)
    Path(folder/f'{df.image_id.iloc[0]}.jpg').write_bytes(b'\xff\xd8\xff garbage')
    with pytest.raises(CommandError, match='is corrupt or truncated|is not an image'): run_evaluate(folder, lab, run, echo=lambda s: None)
    r = cli('melanoma-evaluate', folder, '--labels', lab, '--run', run)   # the script: an error line, no traceback
    assert r.returncode == 1 and r.stdout.startswith(DISCLAIMER) and 'Traceback' not in r.stderr and f'{df.image_id.iloc[0]}.jpg' in r.stderr
    r = cli('melanoma-evaluate', folder, '--run', run)
    assert r.returncode == 1 and r.stderr.startswith('error: --labels: not given. Fix:')


def test_every_console_script_starts_quietly():
    "Every console script of pyproject.toml answers --help with exit 0 and nothing on stderr (no import-time warnings: torch 2.14 warns when fastai is imported)."
    import tomllib
    names = tomllib.loads((Path(__file__).parents[1]/'pyproject.toml').read_text())['project']['scripts']
    assert len(names) >= 9
    procs = {n: subprocess.Popen([str(BIN/n), '--help'], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in names}
    out = {n: (p.communicate(timeout=300)[1], p.returncode)[::-1] for n, p in procs.items()}  # communicate: no pipe can fill up and block
    assert {n: o for n, o in out.items() if o != (0, '')} == {}
