"""Misuse of `melanoma-predict` and `melanoma-evaluate` (issue 14), one section per class of fault:

1. outputs never replace inputs or earlier results; default output folders are unique; own outputs are never inputs;
2. labels map one-to-one to images;
3. nonsense option values and images too small to mean anything are refused before any work;
4. one line instead of a traceback (`--out` a file, Ctrl-C, a broken fold file, no GPU, odd CSVs, folder vs file, runs/latest);
5. a word where the user needs one (incomplete or smoke ensemble, skipped files, EXIF, animation, training images, one class);
6. bootstrap CIs of `melanoma-evaluate` (lesion-level with lesion_id, image-level otherwise).

Every case asserts the exact outcome and, with `unchanged` (tests/conftest.py), that nothing outside the command's own
new outputs changed. The models are a run of two randomly initialised fold models in chapter 05's layout (their
predictions are arbitrary, which is all these checks need; no training, so the file runs in well under a minute of
CPU); the data is `make_synthetic`'s.
"""
from __future__ import annotations
import json, os, re, shutil, subprocess, sys, warnings
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch
from PIL import Image, PngImagePlugin
from safetensors.torch import save_file

import melanoma_nbdev.predict as predict
import melanoma_nbdev.scoring as scoring
from melanoma_nbdev.augment import model_stats
from melanoma_nbdev.data import CLASSES, read_rgb
from melanoma_nbdev.models import Classifier, create_backbone
from melanoma_nbdev.predict import check_inputs, melanoma_evaluate, melanoma_predict, run_evaluate, run_predict
from melanoma_nbdev.scoring import DISCLAIMER, FOLD_FIX, CommandError, load_ensemble, model_folder, predict_images
from melanoma_nbdev.profiles import save_json

pytestmark = pytest.mark.usefixtures('clean_env')
BIN = Path(sys.executable).parent
quiet = lambda s: None
ARCH, CONF = 'tf_efficientnet_lite0', 'tf_efficientnet_lite0_ce'


def fake_fold(d: Path, fold: int, seed: int = 0) -> Path:
    "A finished fold folder with a randomly initialised model, in chapter 05's layout."
    torch.manual_seed(seed); m = Classifier(create_backbone(ARCH, pretrained=False)[0], len(CLASSES))
    d.mkdir(parents=True, exist_ok=True)
    save_file({n: v.contiguous() for n, v in m.state_dict().items()}, str(d/'model.safetensors'))
    save_json(dict(arch=ARCH, meta=False, fold=fold, classes=CLASSES, img_size=32, stats=model_stats(ARCH), weights='random (test)'), d/'config.json')
    save_json(dict(done=True), d/'done.json')
    return d


@pytest.fixture(scope='module')
def base_run(tmp_path_factory, synthetic_data):
    "runs/smoky: a smoke run of 2 random fold models that trained (says its record) on the synthetic data."
    root = tmp_path_factory.mktemp('misuse')
    run = root/'runs'/'smoky'
    for k in (0, 1): fake_fold(run/'kfold'/CONF/f'fold{k}', k, seed=k)
    save_json(dict(profile='smoke', smoke=True, parameters=dict(folds=2), data=str(synthetic_data), main=f'{ARCH} ce'), run/'results'/'kfold_metrics.json')
    return run


@pytest.fixture
def run(base_run, tmp_path):
    "A private copy of the run, for a test that breaks it or writes evaluations into it."
    return Path(shutil.copytree(base_run, tmp_path/'runs'/'smoky'))


def pictures(folder: Path, n: int = 3, size=(200, 150), seed: int = 0, prefix='img') -> list:
    "`n` random RGB JPEGs in `folder`."
    folder.mkdir(parents=True, exist_ok=True); rng = np.random.default_rng(seed)
    for i in range(n): Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder/f'{prefix}{i}.jpg')
    return sorted(folder.glob(f'{prefix}*.jpg'))


def csv_file(path: Path, text: str, encoding='utf-8') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True); path.write_bytes(text.encode(encoding)); return path


def cli_inproc(fn, capsys, **kw):
    "Call a console script's function in-process (fastcore's call_parse passes keyword calls through): (exit code, stdout, stderr)."
    try: fn(**kw); code = 0
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    if isinstance(code, str): err, code = err + code + '\n', 1   # SystemExit('error: ...') prints to stderr and exits 1
    return code, out, err


# ------------------------------------------------------------------ 1. outputs never overwrite

def test_second_predict_into_same_out_is_refused_unless_force(run, tmp_path, unchanged):
    imgs = pictures(tmp_path/'in')
    out = tmp_path/'out'
    run_predict([tmp_path/'in'], run, out, echo=quiet)
    with unchanged(tmp_path/'in', out, run):
        with pytest.raises(CommandError, match=r'--out .*out: already holds predictions.csv, which this command would replace\. Fix: .*--force'):
            run_predict([tmp_path/'in'], run, out, echo=quiet)
    before = (out/'predictions.csv').stat().st_mtime_ns
    with unchanged(tmp_path/'in'): run_predict([tmp_path/'in'], run, out, echo=quiet, force=True)
    assert (out/'predictions.csv').stat().st_mtime_ns != before and len(pd.read_csv(out/'predictions.csv')) == len(imgs)


def test_gradcam_beside_users_file_is_refused(run, tmp_path, unchanged):
    folder = tmp_path/'photos'; pictures(folder, 2)
    Image.new('RGB', (64, 64), 'red').save(folder/'img0_gradcam.png')          # the user's own file, no notice in it
    with unchanged(folder, run):
        with pytest.raises(CommandError, match=r'already holds img0_gradcam\.png, which this command would replace'):
            run_predict([folder/'img0.jpg', folder/'img1.jpg'], run, folder, gradcam=True, echo=quiet)


def test_default_predict_folders_are_new_each_call(run, tmp_path, monkeypatch):
    pictures(tmp_path/'in', 2); monkeypatch.chdir(tmp_path)
    lines1, lines2 = [], []
    run_predict([tmp_path/'in'], run, echo=lines1.append); run_predict([tmp_path/'in'], run, echo=lines2.append)
    outs = sorted((tmp_path/'predictions').iterdir())
    assert len(outs) == 2 and all((o/'predictions.csv').is_file() for o in outs)
    assert all(re.fullmatch(r'\d{8}T\d{6}Z(-\d+)?', o.name) for o in outs)   # <UTC timestamp>, -2 if taken
    assert lines1[-1] != lines2[-1]


def test_two_evaluations_of_same_named_folders_keep_both(run, tmp_path, unchanged):
    a, b = tmp_path/'site_a'/'ext', tmp_path/'site_b'/'ext'
    pictures(a, 3, seed=1); pictures(b, 3, seed=2)
    lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg0,mel\nimg1,nv\nimg2,bkl\n')
    ra = run_evaluate(a, lab, run, echo=quiet, n_boot=0)
    first = sorted((run/'evaluations').iterdir())
    with unchanged(*first): rb = run_evaluate(b, lab, run, echo=quiet, n_boot=0)
    outs = sorted((run/'evaluations').iterdir())
    assert len(outs) == 2 and all(o.name.startswith('ext-') for o in outs) and outs[0].name[4:12] != outs[1].name[4:12]
    assert {json.loads((o/'metrics.json').read_text())['data']['folder'] for o in outs} == {str(a.resolve()), str(b.resolve())}


def test_evaluate_into_out_with_results_is_refused(run, tmp_path, unchanged):
    pictures(tmp_path/'ext', 2)
    lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg0,mel\nimg1,nv\n')
    out = tmp_path/'res'; out.mkdir(); (out/'summary.md').write_text('my notes')
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError, match=r'already holds summary\.md, which this command would replace'): run_evaluate(tmp_path/'ext', lab, run, out, echo=quiet)
    run_evaluate(tmp_path/'ext', lab, run, out, echo=quiet, n_boot=0, force=True)
    assert (out/'metrics.json').is_file() and (out/'summary.md').read_text() != 'my notes'


def test_own_outputs_are_never_inputs(run, tmp_path, unchanged):
    folder = tmp_path/'photos'; pictures(folder, 2)
    lines = []
    run_predict([folder], run, folder, gradcam=True, echo=lines.append)        # --out = the input folder
    assert sorted(p.name for p in folder.glob('*_gradcam.png')) == ['img0_gradcam.png', 'img1_gradcam.png']
    assert any(l.startswith(f'note: --out {folder} lies inside the input folder {folder}') for l in lines)
    with unchanged(folder, run):
        got = check_inputs([folder])
        assert got == [folder/'img0.jpg', folder/'img1.jpg']                 # the overlays are skipped, and listed
        assert 'img0_gradcam.png (an overlay written by melanoma-predict)' in got.messages[0] and 'predictions.csv (suffix not one of' in got.messages[0]
        with pytest.raises(CommandError, match='img0_gradcam.png is an overlay written by melanoma-predict, not a photo. Fix: give the original image.'):
            run_predict([folder/'img0_gradcam.png'], run, tmp_path/'o2', echo=quiet)
    sub = folder/'results'
    run_predict([folder], run, sub, echo=(lines := []).append)              # --out inside an input folder: a note
    assert f'note: --out {sub} lies inside the input folder {folder}: its files are not taken as inputs' in lines


# ------------------------------------------------------------------ 2. labels map one-to-one

@pytest.mark.parametrize('ids,lines', [(('img0', 'img0.jpg'), "lines 2 ('img0') and 3 ('img0.jpg')"),
                                       (('img1', 'IMG1.JPG'), "lines 2 ('img1') and 3 ('IMG1.JPG')")])
def test_one_image_listed_twice_is_an_error_naming_both_lines(run, tmp_path, unchanged, ids, lines):
    folder = tmp_path/'ext'; pictures(folder, 3)
    lab = csv_file(tmp_path/'l.csv', f'image_id,dx\n{ids[0]},mel\n{ids[1]},nv\n')
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError) as e: run_evaluate(folder, lab, run, echo=quiet)
    assert f'{lab}: {lines} name the same image {folder/ids[0].lower().removesuffix(".jpg")}.jpg. Fix: keep one row per image.' == str(e.value)


def test_id_matching_two_files_is_an_error_naming_both(run, tmp_path, unchanged):
    folder = tmp_path/'ext'; pictures(folder, 2)
    Image.open(folder/'img0.jpg').save(folder/'img0.png')
    lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg1,nv\nimg0,mel\n')
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError, match=r"image_id 'img0' on line 3 is ambiguous \(ambiguous: it matches 2 files, img0\.jpg, img0\.png; .*Fix: give the file name with its suffix"):
            run_evaluate(folder, lab, run, echo=quiet)
    res = run_evaluate(folder, csv_file(tmp_path/'ok.csv', 'image_id,dx\nimg1,nv\nimg0.png,mel\n'), run, tmp_path/'out', echo=quiet, n_boot=0)
    assert res['metrics']['n'] == 2 and res['data']['n_unlabelled'] == 1


def test_paths_in_image_id_are_resolved_or_refused(run, tmp_path, unchanged):
    folder = tmp_path/'ext'; imgs = pictures(folder, 3)
    lab = csv_file(tmp_path/'l.csv', f'image_id,dx\n{imgs[0]},mel\next/img1.jpg,nv\n./ext/img2,bkl\n')   # absolute; relative to the CSV's folder
    res = run_evaluate(folder, lab, run, tmp_path/'out', echo=quiet, n_boot=0)
    assert res['metrics']['n'] == 3 and res['data']['n_unlabelled'] == 0
    other = pictures(tmp_path/'elsewhere', 1)[0]
    bad = csv_file(tmp_path/'bad.csv', f'image_id,dx\nimg0,mel\n{other},nv\n')
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError, match=rf"image_id '{other}' on line 3 names a file outside the image folder .*Fix: copy the image into {folder}"):
            run_evaluate(folder, bad, run, tmp_path/'out2', echo=quiet)


def test_a_lesion_with_two_labels_is_an_error(run, tmp_path, unchanged):
    pictures(tmp_path/'ext', 3)
    lab = csv_file(tmp_path/'l.csv', 'image_id,melanoma,lesion_id\nimg0,1,L1\nimg1,0,L2\nimg2,0,L1\n')
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError, match=r"l\.csv: lesion 'L1' has different melanoma labels on line\(s\) 2, 4\. Fix:"): run_evaluate(tmp_path/'ext', lab, run, echo=quiet)


# ------------------------------------------------------------------ 3. nonsense values

@pytest.mark.parametrize('opt,value,msg', [('max_pixels', float('nan'), '--max-pixels: nan is not a whole number in [1024, 5e+08]'),
                                           ('max_pixels', float('inf'), '--max-pixels: inf is not a whole number in [1024, 5e+08]'),
                                           ('max_pixels', 0, '--max-pixels: 0 is not a whole number in [1024, 5e+08]'),
                                           ('bs', 0, '--bs: 0 is not a whole number in [1, 1024]'),
                                           ('bs', -3, '--bs: -3 is not a whole number in [1, 1024]')])
def test_numeric_options_are_checked_before_any_work(run, tmp_path, unchanged, capsys, opt, value, msg):
    pictures(tmp_path/'in', 1)
    with unchanged(tmp_path, run):
        code, out, err = cli_inproc(melanoma_predict, capsys, images=[str(tmp_path/'in')], run=str(run), out=str(tmp_path/'out'), **{opt: value})
    assert code == 1 and out == DISCLAIMER + '\n' and err == f'error: {msg}. Fix: give a value in that range.\n'


def test_evaluate_n_boot_and_bs_are_checked(run, tmp_path, unchanged):
    pictures(tmp_path/'ext', 1); lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg0,mel\n')
    with unchanged(tmp_path, run):
        for kw, msg in ((dict(n_boot=-5), '--n-boot: -5 is not a whole number'), (dict(bs=1e9), '--bs: 1000000000.0 is not a whole number'),
                        (dict(max_pixels=float('nan')), '--max-pixels: nan is not')):
            with pytest.raises(CommandError, match=msg.replace('.', r'\.')): run_evaluate(tmp_path/'ext', lab, run, tmp_path/'out', echo=quiet, **kw)


@pytest.mark.parametrize('size,ok', [((1, 1), False), ((31, 100), False), ((100, 31), False), ((32, 32), True)])
def test_images_too_small_are_refused(run, tmp_path, unchanged, size, ok):
    fn = tmp_path/'in'/'tiny.png'; fn.parent.mkdir(); Image.new('RGB', size, 'brown').save(fn)
    if ok: assert len(run_predict([fn], run, tmp_path/'out', echo=quiet)) == 1; return
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError) as e: run_predict([fn], run, tmp_path/'out', echo=quiet)
    assert str(e.value) == (f'1 unusable input(s); nothing was predicted:\n{fn} is {size[0]}x{size[1]} pixels, smaller than 32 px on a side: too small to show a lesion. '
                            + predict.INPUT_FIX)


def test_extreme_aspect_ratio_gets_a_note(run, tmp_path):
    strip, square = pictures(tmp_path/'in', 1, size=(400, 100), prefix='strip')[0], pictures(tmp_path/'in', 1, size=(300, 100), prefix='sq')[0]
    lines = []
    pred = run_predict([strip, square], run, tmp_path/'out', echo=lines.append)
    csv = pd.read_csv(tmp_path/'out'/'predictions.csv', keep_default_na=False)
    assert csv.image_note.tolist() == ['aspect ratio 4.0:1, squished to a square', '']          # 3:1 exactly is no note
    assert [l for l in lines if 'squished' in l] == [l for l in lines if l.startswith(f'{strip}:')]
    assert [l for l in lines if 'squished' in l][0].endswith('| risk ' + pred.risk[0] + ' | note: aspect ratio 4.0:1, squished to a square')


# ------------------------------------------------------------------ 4. one line, not a traceback

def test_out_naming_a_file_is_refused_up_front(run, tmp_path, unchanged):
    pictures(tmp_path/'in', 1)
    (f := tmp_path/'taken.csv').write_text('a user file')
    r = subprocess.run([str(BIN/'melanoma-predict'), str(tmp_path/'in'), '--run', str(tmp_path/'no_such_run'), '--out', str(f)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and r.stdout == DISCLAIMER + '\n'       # checked before the (missing) run is even looked at
    assert r.stderr == f'error: --out {f}: is an existing file, not a folder. Fix: give a folder (new, or one of earlier outputs with --force).\n'
    assert f.read_text() == 'a user file'
    lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg0,mel\n')
    with unchanged(tmp_path, run):
        with pytest.raises(CommandError, match=r'--out .*taken.csv/sub: lies under .*taken.csv, which is an existing file'): run_evaluate(tmp_path/'in', lab, run, f/'sub', echo=quiet)


def test_ctrl_c_exits_130_and_says_what_was_written(run, tmp_path, capsys, monkeypatch):
    pictures(tmp_path/'in', 2)
    def stop(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(predict, 'predict_images', stop)
    code, out, err = cli_inproc(melanoma_predict, capsys, images=[str(tmp_path/'in')], run=str(run), out=str(tmp_path/'o1'))
    assert code == 130 and err == 'interrupted (Ctrl-C): nothing was written.\n' and not (tmp_path/'o1').exists()
    monkeypatch.undo()
    real = predict.atomic_write
    def csv_stop(path, data): 
        if Path(path).name == 'predictions.csv': raise KeyboardInterrupt
        return real(path, data)
    monkeypatch.setattr(predict, 'atomic_write', csv_stop)                 # interrupted after the overlays, before the CSV
    code, out, err = cli_inproc(melanoma_predict, capsys, images=[str(tmp_path/'in')], run=str(run), out=str(tmp_path/'o2'), gradcam=True)
    assert code == 130 and err == f"interrupted (Ctrl-C): 2 complete file(s) were written: {tmp_path/'o2'/'img0_gradcam.png'}, {tmp_path/'o2'/'img1_gradcam.png'}.\n"


@pytest.mark.parametrize('broken,content,msg', [('config.json', '{"arch": "tf_eff', "fold1/config.json: not a readable fold configuration (JSONDecodeError"),
                                                 ('config.json', '{"arch": "tf_efficientnet_lite0"}', "fold1/config.json: not a readable fold configuration (ValueError: no fold, classes, img_size, stats)"),
                                                 ('model.safetensors', 'not a model', "fold1/model.safetensors: cannot be loaded as this fold's model (")])
def test_broken_fold_file_is_named(run, tmp_path, unchanged, capsys, broken, content, msg):
    pictures(tmp_path/'in', 1)
    (run/'kfold'/CONF/'fold1'/broken).write_text(content)
    with unchanged(tmp_path/'in', run):
        code, out, err = cli_inproc(melanoma_predict, capsys, images=[str(tmp_path/'in')], run=str(run), out=str(tmp_path/'out'))
    assert code == 1 and err.startswith(f'error: {run/"kfold"/CONF}/{msg}') and err.endswith(f'). {FOLD_FIX}\n') and err.count('\n') == 1
    assert 'train a run first' not in err and not (tmp_path/'out').exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason='needs a machine without a GPU')
def test_cuda_without_gpu_says_so(run, tmp_path, unchanged, capsys):
    pictures(tmp_path/'in', 1); lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg0,mel\n')
    with unchanged(tmp_path, run):
        code, out, err = cli_inproc(melanoma_predict, capsys, images=[str(tmp_path/'in')], run=str(run), device='cuda')
        assert (code, err) == (1, 'error: --device cuda: this machine has no GPU that torch can use. Fix: use --device cpu.\n')
        code, out, err = cli_inproc(melanoma_evaluate, capsys, folder=str(tmp_path/'in'), labels=str(lab), run=str(run), device='cuda:1')
        assert (code, err) == (1, 'error: --device cuda:1: this machine has no GPU that torch can use. Fix: use --device cpu.\n')


@pytest.mark.parametrize('sep,encoding,note', [(';', 'utf-8', 'read as semicolon-separated'), ('\t', 'utf-8', 'read as tab-separated'),
                                                (',', 'latin-1', 'not UTF-8; read as Latin-1'), (';', 'latin-1', 'not UTF-8; read as Latin-1')])
def test_semicolon_and_latin1_csvs_are_read(run, tmp_path, sep, encoding, note):
    pictures(tmp_path/'ext', 3)
    lab = csv_file(tmp_path/'l.csv', sep.join(['image_id', 'dx', 'lesion_id']) + '\n' + ''.join(sep.join([f'img{i}', d, f'Läsion {i}']) + '\n' for i, d in enumerate(('mel', 'nv', 'bkl'))), encoding)
    lines = []
    res = run_evaluate(tmp_path/'ext', lab, run, tmp_path/'out', echo=lines.append, n_boot=0)
    assert res['metrics']['n'] == 3 and f'note: {lab}: {note}' in lines and f'{lab}: {note}' in res['data']['notes']


def test_folder_where_a_file_is_expected_and_back(run, tmp_path, unchanged, capsys):
    pictures(tmp_path/'ext', 1); lab = csv_file(tmp_path/'l.csv', 'image_id,dx\nimg0,mel\n')
    with unchanged(tmp_path, run):
        for kw, msg in ((dict(folder=tmp_path/'ext', labels=tmp_path/'ext'), f'error: --labels {tmp_path/"ext"}: is a folder, not a CSV file. Fix: give the labels CSV file'),
                        (dict(folder=lab, labels=lab), f'error: {lab}: is a file, not a folder. Fix: give the folder that holds the images'),
                        (dict(folder=tmp_path/'ext', labels=lab, run=lab), f'error: --run {lab}: is a file, not a run folder. Fix:')):
            code, out, err = cli_inproc(melanoma_evaluate, capsys, **{k: str(v) for k, v in kw.items()}, **({} if 'run' in kw else dict(run=str(run))))
            assert code == 1 and err.startswith(msg) and err.count('\n') == 1, err


def test_latest_without_models_names_the_newest_trained_run(base_run, tmp_path, unchanged, monkeypatch):
    runs = tmp_path/'runs'
    shutil.copytree(base_run, runs/'good'); (runs/'partial'/'notebooks').mkdir(parents=True)
    (runs/'latest').symlink_to('partial')
    monkeypatch.setattr(scoring, 'project_root', lambda: tmp_path)
    with unchanged(runs):
        with pytest.raises(CommandError) as e: model_folder()
    assert str(e.value) == f"{runs/'latest'} (-> partial) holds no trained fold models, but {runs/'good'} does (the newest run with models). Fix: pass --run {runs/'good'}."
    (runs/'latest').unlink(); (runs/'latest').symlink_to('good')
    assert model_folder() == runs/'latest'/'kfold'/CONF


# ------------------------------------------------------------------ 5. a word where the user needs one

def test_smoke_and_incomplete_ensembles_warn_first_and_in_the_csv(run, tmp_path):
    pictures(tmp_path/'in', 2)
    (run/'kfold'/CONF/'fold1'/'done.json').unlink()
    lines = []
    run_predict([tmp_path/'in'], run, tmp_path/'out', echo=lines.append)
    conf = run/'kfold'/CONF
    w = [f'warning: incomplete ensemble: {conf} has unfinished fold(s) fold1 (no done.json); using the 1 finished one(s)',
         f'warning: the models come from a SMOKE run ({run.resolve()}): a tiny CPU run that checks the code; its outputs mean nothing']
    assert lines[:2] == w
    csv = pd.read_csv(tmp_path/'out'/'predictions.csv')
    assert (csv.model_warning == '; '.join(s.removeprefix('warning: ') for s in w)).all()
    shutil.rmtree(conf/'fold1')                                               # one of the run's 2 folds missing altogether
    assert load_ensemble(conf).notes[0] == f"incomplete ensemble: 1 of the run's 2 fold models in {conf}"


def test_files_left_out_of_a_folder_are_listed(run, tmp_path, unchanged):
    folder = tmp_path/'in'; pictures(folder, 1)
    (folder/'notes.txt').write_text('x'); (folder/'gone.jpg').symlink_to(tmp_path/'nowhere.jpg'); Image.open(folder/'img0.jpg').save(folder/'anim.gif')
    lines, before = [], sorted(os.listdir(folder))                          # (`unchanged` cannot stat a broken link)
    run_predict([folder], run, tmp_path/'out', echo=lines.append)
    assert sorted(os.listdir(folder)) == before
    note = [l for l in lines if l.startswith(f'note: {folder}: left out 3 file(s): ')]
    assert len(note) == 1 and all(s in note[0] for s in ('anim.gif (suffix not one of', 'gone.jpg (a broken link)', 'notes.txt (suffix not one of'))


def test_exif_orientation_is_applied_to_prediction_and_overlay(run, tmp_path):
    folder = tmp_path/'in'; folder.mkdir()
    rng = np.random.default_rng(3); a = rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)
    ex = Image.Exif(); ex[0x0112] = 6                                             # stored 200x120, to be shown turned by 90 degrees
    Image.fromarray(a).save(folder/'turned.png', exif=ex)
    Image.fromarray(a).transpose(Image.Transpose.ROTATE_270).save(folder/'upright.png')
    assert read_rgb(folder/'turned.png').shape == (200, 120, 3)
    pred = run_predict([folder/'turned.png', folder/'upright.png'], run, tmp_path/'out', gradcam=True, echo=quiet)
    p = pred[[f'p_{c}' for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(p[0], p[1], atol=1e-6)                          # the model saw the picture as shown
    with Image.open(pred.gradcam[0]) as o0, Image.open(pred.gradcam[1]) as o1:
        assert o0.width == 120 and np.array_equal(np.asarray(o0), np.asarray(o1))   # the overlay matches the photo


def test_animated_image_gets_a_note(run, tmp_path):
    fn = tmp_path/'anim.gif'; frames = [Image.new('RGB', (64, 64), c) for c in ('red', 'blue', 'green')]
    frames[0].save(fn, save_all=True, append_images=frames[1:])
    lines = []
    pred = run_predict([fn], run, tmp_path/'out', echo=lines.append)
    assert pred.image_note.tolist() == ['animated (3 frames): the first frame is used'] and lines[-2].endswith('| note: animated (3 frames): the first frame is used')


def test_evaluating_training_images_warns(run, tmp_path, synthetic_data):
    meta = pd.read_csv(synthetic_data/'metadata.csv')
    folder = tmp_path/'ext'; folder.mkdir()
    shutil.copy(synthetic_data/'images'/f'{meta.image_id[0]}.jpg', folder)                       # same name and bytes
    shutil.copy(synthetic_data/'images'/f'{meta.image_id[1]}.jpg', folder/'renamed.jpg')        # same bytes
    pictures(folder, 1)                                                                          # a new image
    lab = csv_file(tmp_path/'l.csv', f'image_id,dx\n{meta.image_id[0]},{meta.dx[0]}\nrenamed,{meta.dx[1]}\nimg0,nv\n')
    lines = []
    res = run_evaluate(folder, lab, run, tmp_path/'out', echo=lines.append, n_boot=0)
    ov = res['training_overlap']
    assert ov['data'] == str(synthetic_data) and ov['same_id'] == [str(folder/f'{meta.image_id[0]}.jpg')]
    assert sorted(ov['identical']) == sorted([str(folder/f'{meta.image_id[0]}.jpg'), str(folder/'renamed.jpg')])
    on_disk = json.loads((tmp_path/'out'/'metrics.json').read_text())
    assert any(w.startswith('2 evaluated image(s) are byte-identical to HAM10000 images the run trained on') for w in on_disk['warnings'])
    assert any(w.startswith('1 evaluated image(s) share an image_id with HAM10000 images') for w in on_disk['warnings'])
    assert any(l.startswith('warning: 2 evaluated image(s) are byte-identical') for l in lines)
    assert 'byte-identical' in (tmp_path/'out'/'summary.md').read_text()


def test_one_class_evaluation_shows_na_and_no_raw_warning(run, tmp_path):
    pictures(tmp_path/'ext', 4)
    lab = csv_file(tmp_path/'l.csv', 'image_id,dx\n' + ''.join(f'img{i},nv\n' for i in range(4)))
    r = subprocess.run([str(BIN/'melanoma-evaluate'), str(tmp_path/'ext'), '--labels', str(lab), '--run', str(run), '--out', str(tmp_path/'out'), '--n-boot', '20'],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert 'sklearn' not in r.stderr and 'UndefinedMetric' not in r.stderr and 'Traceback' not in r.stderr
    res = json.loads((tmp_path/'out'/'metrics.json').read_text())
    pc = res['per_class']
    assert pc['mel']['recall'] is None and pc['mel']['auc'] is None and pc['mel']['f1'] is None and pc['nv']['auc'] is None
    assert res['metrics']['mel_auc'] is None and res['metrics']['macro_auc'] is None
    assert re.search(r'^\| mel \| (n/a|0\.000) \| n/a \| n/a \| n/a \| 0 \|$', r.stdout, re.M), r.stdout
    assert r.stdout.startswith(DISCLAIMER + '\nwarning: the models come from a SMOKE run')


# ------------------------------------------------------------------ 6. bootstrap CIs

def test_bootstrap_cis_are_lesion_level_with_lesion_id(run, tmp_path):
    folder = tmp_path/'ext'; pictures(folder, 8)
    dx = ['mel', 'nv'] * 4
    lab = csv_file(tmp_path/'l.csv', 'image_id,dx,lesion_id\n' + ''.join(f'img{i},{"mel" if (i//2) % 2 else "nv"},L{i//2}\n' for i in range(8)))
    res = run_evaluate(folder, lab, run, tmp_path/'out', echo=quiet, n_boot=30)
    b = res['bootstrap']
    assert (b['level'], b['n_units'], b['n_resamples']) == ('lesion', 4, 30)
    assert res['lesion_metrics']['n'] == 4 and res['lesion_metrics']['n_melanoma'] == 2      # lesion level: one decision per lesion
    assert b['ci']['accuracy']['lo'] <= res['metrics']['accuracy'] <= b['ci']['accuracy']['hi']
    assert 0 <= b['ci']['mel_auc']['lo'] <= b['ci']['mel_auc']['hi'] <= 1
    res2 = run_evaluate(folder, csv_file(tmp_path/'l2.csv', 'image_id,dx\n' + ''.join(f'img{i},{dx[i]}\n' for i in range(8))), run, tmp_path/'out2', echo=quiet, n_boot=20)
    assert (res2['bootstrap']['level'], res2['bootstrap']['n_units']) == ('image', 8)
    assert '95% CIs: percentile bootstrap over 4 lesions (30 resamples, all images of a lesion together)' in (tmp_path/'out'/'summary.md').read_text()
