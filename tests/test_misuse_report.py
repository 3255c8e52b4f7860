"""Misuse of `melanoma-report`, `melanoma-data`, the profiles and papermill (issue 14): one clear line, nothing lost.

Each test asserts the exact outcome (the one `error:` line and the exit code, or the correct result) and that no
file outside the command's own new outputs changed (`unchanged`). Runs use a tiny stand-in notebook in a copy of the
project and synthetic data, so the whole file takes about a minute.
"""
from __future__ import annotations
import json, os, re, shutil, signal, subprocess, sys, time
from pathlib import Path

import nbformat, pandas as pd, pytest

from melanoma_nbdev.data import CLASSES, DataError, make_synthetic, read_metadata, sample_lesions, split, split_limits
from melanoma_nbdev.profiles import ProfileError, atomic_write, load_profile, project_root, save_json

ROOT = project_root(Path(__file__).parent)
BIN = Path(sys.executable).parent
FAKE = """import json, os, pathlib
from melanoma_nbdev.profiles import load_profile
P = load_profile(profile, overrides=overrides)
if os.environ.get('FAKE_FAIL'): raise RuntimeError('asked to fail')
d = pathlib.Path(run_dir)/'results'; d.mkdir(exist_ok=True)
(d/'profile.json').write_text(json.dumps(dict(P), default=str))"""
PARAMS = "profile = 'smoke'\ndata_path = None\nrun_dir = None\noverrides = {}"


def notebook(path: Path, code: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PARAMS, metadata={'tags': ['parameters']}), nbformat.v4.new_code_cell(code)])
    nb.metadata['kernelspec'] = {'name': 'python3', 'display_name': 'python3', 'language': 'python'}
    nbformat.write(nb, path)
    return path


def project(dest: Path, code: str = FAKE, name: str = '00_fake.ipynb') -> Path:
    "A copy of the project's settings with one stand-in notebook."
    (dest/'nbs').mkdir(parents=True)
    for f in ('settings.ini', 'pyproject.toml', '_quarto.yml'): shutil.copy(ROOT/f, dest/f)
    shutil.copy(ROOT/'nbs'/'index.ipynb', dest/'nbs'/'index.ipynb')
    notebook(dest/'nbs'/name, code)
    return dest


@pytest.fixture(scope='module')
def syn(tmp_path_factory) -> Path:
    "70 lesions, 10 per class: at most 10 folds; read-only."
    return make_synthetic(tmp_path_factory.mktemp('data')/'syn', n_lesions=70)


def env(syn=None, **extra):
    e = {k: v for k, v in os.environ.items() if k not in ('MELANOMA_DATA', 'MELANOMA_SETTINGS')}
    e.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS='1', **extra)
    if syn: e['MELANOMA_DATA'] = str(syn)
    return e


def cli(tool, *args, cwd, syn=None, timeout=300, **extra):
    return subprocess.run([str(BIN/tool), *map(str, args)], cwd=cwd, env=env(syn, **extra), capture_output=True, text=True, timeout=timeout)


class Result:
    def __init__(self, returncode, stdout, stderr): self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run a console command in this process, as its script would (fastcore's `parse_cli`, then the function; a `SystemExit`
    with a message prints it to stderr and exits 1, as Python does): fast, no interpreter start per case."""
    from melanoma_nbdev.pipeline import melanoma_report
    from melanoma_nbdev.data import melanoma_data
    from fastcore.script import parse_cli
    def run(tool, *args, cwd, syn=None, **extra):
        func = dict(zip(('melanoma-report', 'melanoma-data'), (melanoma_report, melanoma_data)))[tool]
        monkeypatch.chdir(cwd); monkeypatch.setattr(sys, 'argv', [tool, *map(str, args)])
        for k in ('MELANOMA_DATA', 'MELANOMA_SETTINGS'): monkeypatch.delenv(k, raising=False)
        if syn: monkeypatch.setenv('MELANOMA_DATA', str(syn))
        for k, v in extra.items(): monkeypatch.setenv(k, v)
        capsys.readouterr()
        try:
            pargs, kw, _ = parse_cli(func); func(*pargs, **kw); code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
            if isinstance(e.code, str): print(e.code, file=sys.stderr)
        out, err = capsys.readouterr()
        return Result(code, out, err)
    return run


def one_line(r, code: int, expected: str | re.Pattern):
    "The command exited with `code` and wrote exactly one line to stderr: `expected` (a string, or a regex it must match in full)."
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr + r.stdout, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    if isinstance(expected, re.Pattern): assert expected.fullmatch(lines[0]), lines[0]
    else: assert lines[0] == expected, f'\n got: {lines[0]}\nwant: {expected}'


@pytest.fixture(scope='module')
def finished(tmp_path_factory, syn):
    "A finished run `done` of the stand-in notebook with two overrides (one notebook execution, shared read-only)."
    proj = project(tmp_path_factory.mktemp('proj')/'p')
    r = cli('melanoma-report', '--set', 'n_images=100', '--set', 'img_size=48', '--set', 'epochs=2', '--name', 'done', '--no-render', cwd=proj, syn=syn)
    assert r.returncode == 0, r.stderr
    return proj


# ---------------------------------------------------------------- 1. repeated options accumulate or are refused

def test_every_set_is_applied_and_recorded(finished, syn):
    run = finished/'runs'/'done'
    prov = json.loads((run/'provenance.json').read_text())
    assert prov['overrides'] == {'n_images': 100, 'img_size': 48, 'epochs': 2} == prov['command']['overrides']
    assert prov['parameters']['img_size'] == 48 and prov['parameters']['epochs'] == 2
    used = json.loads((run/'results'/'profile.json').read_text())  # what the notebook itself got
    assert (used['img_size'], used['epochs'], used['n_images'], used['bs']) == (48, 2, 100, 32)
    assert (finished/'runs'/'latest').resolve() == run.resolve()


@pytest.mark.parametrize('args,line', [
    (['--set', 'epochs=1', '--set', 'epochs=2'], "error: --set epochs is given twice, as '1' and '2'. Fix: give it once."),
    (['--set', 'n_images=500,img_size=32'], "error: --set 'n_images=500,img_size=32' holds more than one key=value pair. Fix: one pair per --set, "
                                            "e.g. --set n_images=500 --set img_size=32 (a comma in a value is for lists: --set archs=resnet34,efficientnet_b0)."),
    (['--profile', 'smoke', '--profile', 'full'], "error: --profile is given twice ('smoke' and 'full'). Fix: give it once."),
    (['--name', 'a', '--name', 'b'], "error: --name is given twice ('a' and 'b'). Fix: give it once."),
    (['--only', '00_', '--only', '90_'], "error: --only is given twice ('00_' and '90_'). Fix: give it once."),
    (['--set', 'epochs'], "error: --set 'epochs' is not key=value. Fix: e.g. --set epochs=3 (one --set per value)."),
], ids=['same-key-twice', 'two-pairs-in-one', 'profile-twice', 'name-twice', 'only-twice', 'no-equals'])
def test_repeated_options_refused(tmp_path, syn, unchanged, args, line, run_cli):
    proj = project(tmp_path/'p')
    with unchanged(proj, syn):
        one_line(run_cli('melanoma-report', *args, '--no-render', cwd=proj, syn=syn), 1, line)


def test_same_set_twice_is_fine_and_repeated_sets_reach_papermill(tmp_path):
    from melanoma_nbdev.profiles import parse_sets
    assert parse_sets(['n_images=150', 'img_size=32', 'n_images=150']) == {'n_images': '150', 'img_size': '32'}
    assert parse_sets(['archs=resnet34,efficientnet_b0']) == {'archs': 'resnet34,efficientnet_b0'}
    assert load_profile('smoke', overrides=parse_sets(['n_images=150', 'img_size=32'])).overrides == {'n_images': 150, 'img_size': 32}


def test_makefile_passes_every_pair_of_SET(tmp_path):
    "`make report SET=\"a=1 b=2\"` gives one --set per pair (dry run in a copy of the Makefile: nothing is executed)."
    shutil.copy(ROOT/'Makefile', tmp_path/'Makefile'); shutil.copy(ROOT/'pyproject.toml', tmp_path/'pyproject.toml')
    (tmp_path/'.venv').mkdir(); time.sleep(0.01); (tmp_path/'.venv'/'.installed').touch()
    env = {k: v for k, v in os.environ.items() if k not in ('MAKEFLAGS', 'MAKELEVEL', 'MFLAGS')}  # also when run from `make test`
    r = subprocess.run(['make', '--no-print-directory', '-n', 'report', 'SET=n_images=150 img_size=32'], cwd=tmp_path, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == '.venv/bin/melanoma-report --profile smoke --set n_images=150 --set img_size=32', r.stdout


@pytest.mark.parametrize('tool,args,line', [
    ('melanoma-report', ['--set', 'epochs=1', '--set', 'epochs=2'], "error: --set epochs is given twice, as '1' and '2'. Fix: give it once."),
    ('melanoma-report', ['--profile', 'smoke', '--profile', 'full'], "error: --profile is given twice ('smoke' and 'full'). Fix: give it once."),
    ('melanoma-data', ['--folds', '0'], 'error: --folds 0: it must be an integer >= 2 and <= 20 (cross-validation needs two folds). Fix: e.g. --folds 5.'),
], ids=['report-set-twice', 'report-profile-twice', 'data-folds-0'])
def test_console_scripts(tmp_path, syn, unchanged, tool, args, line):
    "The installed scripts themselves (the other tests call the same code in-process)."
    proj = project(tmp_path/'p')
    with unchanged(proj, syn): one_line(cli(tool, *args, cwd=proj, syn=syn), 1, line)


# ---------------------------------------------------------------- 2. a run name is a plain name inside runs/

NAME_FIX = ("a run name is one folder inside runs/, of letters, digits, '.', '_' and '-' (at most 100, starting with a letter or digit, "
            "no '..', not latest or interactive). Fix: e.g. --name smoke-try1.")


@pytest.mark.parametrize('name', ['ABS', '../outside', 'a/b', '..', '.hidden', 'latest', 'interactive', 'a b', 'x'*101])
def test_run_name_must_be_plain(tmp_path, syn, unchanged, name, run_cli):
    proj, outside = project(tmp_path/'p'), tmp_path/'outside'
    outside.mkdir(); (outside/'precious.txt').write_text('keep me')
    (proj/'runs'/'old').mkdir(parents=True); (proj/'runs'/'latest').symlink_to('old')
    name = str(outside) if name == 'ABS' else name
    why = 'is reserved (runs/{0} is not a run)'.format(name) if name in ('latest', 'interactive') else 'is not a plain name'
    with unchanged(proj, outside, syn):
        one_line(run_cli('melanoma-report', '--name', name, '--force', '--no-render', cwd=proj, syn=syn), 1, f"error: --name {name!r} {why}: {NAME_FIX}")


def test_link_in_runs_is_not_followed(tmp_path, syn, unchanged, run_cli):
    proj, outside = project(tmp_path/'p'), tmp_path/'outside'
    outside.mkdir(); (outside/'precious.txt').write_text('keep me')
    (proj/'runs').mkdir(); (proj/'runs'/'link').symlink_to(outside)
    with unchanged(proj, outside, syn):
        one_line(run_cli('melanoma-report', '--set', 'n_images=0', '--name', 'link', '--force', '--no-render', cwd=proj, syn=syn), 1,
                 f"error: {proj.resolve()/'runs'/'link'} is a link, not a run folder; it is left alone. Fix: choose another --name.")


def test_latest_is_replaced_atomically(tmp_path):
    from melanoma_nbdev.pipeline import point_latest
    runs = tmp_path/'runs'; (runs/'a').mkdir(parents=True); (runs/'b').mkdir()
    (runs/'latest').symlink_to('gone')                       # dangling from some earlier accident
    point_latest(runs, runs/'a'); assert os.readlink(runs/'latest') == 'a'
    point_latest(runs, runs/'b'); assert (runs/'latest').resolve() == (runs/'b').resolve()
    assert sorted(p.name for p in runs.iterdir()) == ['a', 'b', 'latest']
    (runs/'b'/'kfold'/'m'/'fold0').mkdir(parents=True); (runs/'b'/'kfold'/'m'/'fold0'/'done.json').write_text('{}')
    assert not point_latest(runs, runs/'a') and os.readlink(runs/'latest') == 'b'  # a run without models never hides trained ones


# ---------------------------------------------------------------- 3. every profile value has a range that can run; sampling is fast

def test_sampling_is_fast_for_any_n():
    big = pd.DataFrame({'lesion_id': [f'L{i//4 if i < 4000 else i}' for i in range(10_015)], 'image_id': [f'I{i}' for i in range(10_015)],
                        'dx': pd.Categorical([CLASSES[i % 7] for i in range(10_015)], categories=CLASSES)})
    t0 = time.time()
    for n in (1, 5, 50, 100, 300, 5000):
        s = sample_lesions(big, n, seed=0)
        assert set(s.dx) == set(CLASSES) and big.lesion_id.isin(s.lesion_id).sum() == len(s)  # every class, whole lesions
    assert time.time() - t0 < 5


def test_smallest_n_images_puts_every_class_in_every_fold(syn):
    from types import SimpleNamespace as NS
    md = read_metadata(syn)
    for k in (2, 5, 10):
        lim = split_limits(md, k)
        s = split(md, NS(n_images=lim['min_n_images'], folds=k, seed=1, name='t'))
        assert pd.crosstab(s.fold, s.dx.astype(str)).to_numpy().min() > 0, k
        with pytest.raises(ProfileError, match=f"n_images >= {lim['min_n_images']}"): split(md, NS(n_images=lim['min_n_images'] - 1, folds=k, seed=1, name='t'))


@pytest.mark.parametrize('sets,line', [
    (['n_images=5'], "error: profile 'smoke' on {syn}: `n_images` = 5 is too small for 2 folds: the rarest class ({rare}, 10 lesions) needs 2 lesions in the sample, "
                     "which takes n_images >= {n2}. Fix: --set n_images={n2} or more (0: all images), or fewer folds."),
    (['n_images=0', 'folds=11'], "error: profile 'smoke' on {syn}: `folds` = 11, but the rarest class ({rare}) has only 10 lesions and every fold needs one. Fix: --set folds=5 (at most 10)."),
    (['n_images=100000'], "error: profile 'smoke' on {syn}: `n_images` = 100,000, but the data has only {n:,} images. Fix: --set n_images=0 (all images) or at most {n:,}."),
    (['folds=100000'], "error: profile 'smoke': `folds` = 100000, but it must be >= 2 and <= 20 (cross-validation needs two folds; more than 20 leave too few lesions of the rare classes per fold)."),
    (['folds=1'], "error: profile 'smoke': `folds` = 1, but it must be >= 2 and <= 20 (cross-validation needs two folds; more than 20 leave too few lesions of the rare classes per fold)."),
    (['bs=100000'], "error: profile 'smoke': `bs` = 100000, but it must be >= 1 and <= 1,024."),
    (['epochs=0'], "error: profile 'smoke': `epochs` = 0, but it must be >= 1 and <= 1,000 (per fold)."),
    (['img_size=100000'], "error: profile 'smoke': `img_size` = 100000, but it must be >= 32 and <= 1,024 (pixels)."),
    (['lr=nan'], "error: profile 'smoke': `lr` = nan, but it must be a finite number in [0, 1) (0: choose it with lr_find)."),
    (['lr=inf'], "error: profile 'smoke': `lr` = inf, but it must be a finite number in [0, 1) (0: choose it with lr_find)."),
    (['seed=-1'], "error: profile 'smoke': `seed` = -1, but it must be >= 0 and <= 4,294,967,295 (numpy's seed range)."),
], ids=['n_images=5', 'folds>rarest', 'n_images>data', 'folds=100000', 'folds=1', 'bs', 'epochs=0', 'img_size', 'lr=nan', 'lr=inf', 'seed=-1'])
def test_out_of_range_values_fail_up_front(tmp_path, syn, unchanged, sets, line, run_cli):
    proj, md = project(tmp_path/'p'), read_metadata(syn)
    line = line.format(syn=syn.resolve(), n=len(md), n2=split_limits(md, 2)['min_n_images'], rare=split_limits(md, 2)['rarest'])
    t0 = time.time()
    with unchanged(proj, syn):
        one_line(run_cli('melanoma-report', *[a for s in sets for a in ('--set', s)], '--only', '00_', '--no-render', cwd=proj, syn=syn), 1, line)
    assert time.time() - t0 < 60


# ---------------------------------------------------------------- 4. a refused resume changes nothing; a run in use is refused

def test_resume_with_other_settings_changes_nothing(finished, syn, unchanged, run_cli):
    run = finished/'runs'/'done'
    with unchanged(finished, syn):
        one_line(run_cli('melanoma-report', '--set', 'n_images=100', '--set', 'img_size=64', '--set', 'epochs=2', '--name', 'done', '--resume', '--no-render', cwd=finished, syn=syn), 1,
                 f"error: --resume: {run.resolve()} was made with profile 'smoke', img_size=48; this command asks for profile 'smoke', img_size=64. Nothing was changed. "
                 "Fix: resume with the run's settings (--profile smoke --set n_images=100 --set img_size=48 --set epochs=2 --name done --resume), or start a new run with another --name.")
        one_line(run_cli('melanoma-report', '--profile', 'full', '--set', 'img_size=48', '--set', 'epochs=2', '--set', 'device=cpu', '--name', 'done', '--resume', '--no-render',
                     cwd=finished, syn=syn), 1, re.compile(r"error: --resume: .*done was made with profile 'smoke', bs=32, .*this command asks for profile 'full', bs=128, .*Nothing was changed\. .*"))


def test_resume_of_a_missing_run_is_refused(finished, syn, unchanged, run_cli):
    with unchanged(finished, syn):
        one_line(run_cli('melanoma-report', '--set', 'n_images=0', '--name', 'nope', '--resume', '--no-render', cwd=finished, syn=syn), 1,
                 f"error: --resume: there is no run 'nope' in {finished.resolve()/'runs'} to continue. Fix: drop --resume to start it, or resume one of: done.")


def test_run_in_use_is_refused(finished, syn, unchanged, run_cli):
    from filelock import FileLock
    run = finished/'runs'/'done'
    with FileLock(run/'.lock'):
        with unchanged(finished, syn):
            for args in (['--name', 'done', '--resume', '--set', 'n_images=100', '--set', 'img_size=48', '--set', 'epochs=2', '--no-render'], ['--set', 'n_images=0', '--name', 'done', '--force', '--no-render'], ['--render', run]):
                one_line(run_cli('melanoma-report', *args, cwd=finished, syn=syn), 1,
                         f"error: Run folder {run.resolve() if '--render' not in args else run} is in use by another melanoma-report (it holds {run.resolve() if '--render' not in args else run}/.lock). "
                         "Fix: wait until that command ends, or choose another --name.")


def test_failed_resume_keeps_the_finished_notebook(finished, syn, tmp_path, unchanged, run_cli):
    proj = Path(shutil.copytree(finished, tmp_path/'p', symlinks=True)); run = proj/'runs'/'done'
    nb, prov = (run/'notebooks'/'00_fake.ipynb').read_bytes(), json.loads((run/'provenance.json').read_text())
    with unchanged(syn, proj/'nbs', run/'results'):
        r = run_cli('melanoma-report', '--set', 'n_images=100', '--set', 'img_size=48', '--set', 'epochs=2', '--name', 'done', '--resume', '--no-render', cwd=proj, syn=syn, FAKE_FAIL='1')
    assert r.returncode == 1 and 'Traceback' not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (f"error: 00_fake.ipynb failed at cell 3: RuntimeError: asked to fail. The run's earlier 00_fake.ipynb is kept; "
                                                 f"the failed one is {run.resolve()/'notebooks'/'00_fake.failed.ipynb'}.")
    assert (run/'notebooks'/'00_fake.ipynb').read_bytes() == nb
    after = json.loads((run/'provenance.json').read_text())
    assert after['notebooks'] == prov['notebooks'] and after['date_utc'] == prov['date_utc']
    assert after['resumes'][-1]['notebooks'][0]['status'] == 'failed'
    assert sorted(p.name for p in (run/'notebooks').iterdir()) == ['00_fake.failed.ipynb', '00_fake.ipynb']


# ---------------------------------------------------------------- 5. melanoma-data synth never writes over other data

def test_synth_refuses_real_or_foreign_folders(tmp_path, syn, unchanged, run_cli):
    real = Path(shutil.copytree(syn, tmp_path/'real')); (real/'SYNTHETIC').unlink()  # a dataset without the marker: real data
    mine = tmp_path/'mine'; mine.mkdir(); (mine/'notes.txt').write_text('mine')
    a_file = tmp_path/'file.txt'; a_file.write_text('x')
    with unchanged(real, mine, a_file):
        for d in (real, mine):
            for force in ([], ['--force']):
                one_line(run_cli('melanoma-data', '--action', 'synth', '--path', d, *force, cwd=tmp_path), 1,
                         f"error: {d} is not empty and is not a synthetic dataset (no SYNTHETIC file): refusing to write over it. Fix: give a new or empty folder.")
        one_line(run_cli('melanoma-data', '--action', 'synth', '--path', a_file, cwd=tmp_path), 1,
                 f"error: {a_file} is a file, not a folder. Fix: give a new folder for the synthetic data.")


def test_synth_replaces_an_earlier_synthetic_dataset_only_with_force(tmp_path, unchanged, run_cli):
    d = make_synthetic(tmp_path/'s', n_lesions=14)
    with unchanged(d):
        one_line(run_cli('melanoma-data', '--action', 'synth', '--path', d, '--n-lesions', '7', cwd=tmp_path), 1,
                 f"error: {d} holds an earlier synthetic dataset. Fix: pass --force (force=True) to replace it, or give a new folder.")
    r = run_cli('melanoma-data', '--action', 'synth', '--path', d, '--n-lesions', '7', '--force', cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == f'synthetic data (not HAM10000) written to {d}', r.stderr
    md = read_metadata(d)
    assert md.lesion_id.nunique() == 7 and len(list((d/'images').iterdir())) == len(md)
    r = run_cli('melanoma-data', '--action', 'synth', '--path', tmp_path/'new', '--n-lesions', '7', cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path/'new'/'SYNTHETIC').is_file()


# ---------------------------------------------------------------- 6. nonsense values and contradicting metadata

@pytest.mark.parametrize('args,line', [
    (['--folds', '0'], 'error: --folds 0: it must be an integer >= 2 and <= 20 (cross-validation needs two folds). Fix: e.g. --folds 5.'),
    (['--folds', '1'], 'error: --folds 1: it must be an integer >= 2 and <= 20 (cross-validation needs two folds). Fix: e.g. --folds 5.'),
    (['--folds', '100000'], 'error: --folds 100000: it must be an integer >= 2 and <= 20 (cross-validation needs two folds). Fix: e.g. --folds 5.'),
    (['--folds', 'three'], "error: --folds 'three' is not an integer. Fix: e.g. --folds 5."),
    (['--folds', '11'], 'error: --folds 11: the rarest class of {syn} ({rare}) has only 10 lesions and every fold needs one. Fix: --folds 5.'),
    (['--seed', '-1'], "error: --seed -1: it must be an integer >= 0 and <= 4,294,967,295. Fix: e.g. --seed 5."),
    (['--n-lesions', '0'], 'error: --n-lesions 0: it must be an integer >= 7 and <= 20,000 (one lesion per class at least). Fix: e.g. --n-lesions 7.'),
    (['--folds', '2', '--folds', '3'], 'error: --folds is given twice (2 and 3). Fix: give it once.'),
    (['--action', 'chek'], "error: Unknown action 'chek'; use check, find or synth."),
], ids=['folds=0', 'folds=1', 'folds=100000', 'folds=three', 'folds>rarest', 'seed=-1', 'n_lesions=0', 'folds-twice', 'action'])
def test_melanoma_data_checks_numbers_first(syn, unchanged, tmp_path, args, line, run_cli):
    t0 = time.time()
    with unchanged(syn):
        one_line(run_cli('melanoma-data', '--path', syn, *args, cwd=tmp_path), 1, line.format(syn=syn.resolve(), rare=split_limits(read_metadata(syn), 2)['rarest']))
    assert time.time() - t0 < 30


def test_lesion_with_two_diagnoses(dataset, unchanged, tmp_path, run_cli):
    md = pd.read_csv(dataset/'metadata.csv')
    lesion = md.lesion_id.value_counts().index[0]
    rows = md.index[md.lesion_id == lesion]
    md.loc[rows[-1], 'dx'] = 'mel' if md.dx[rows[0]] != 'mel' else 'nv'
    md.to_csv(dataset/'metadata.csv', index=False)
    dxs, lines = sorted(md.dx[rows].unique()), ', '.join(str(i + 2) for i in rows)
    line = (f"error: {dataset/'metadata.csv'}: lesion {lesion} has different diagnoses {dxs} on line(s) {lines}. "
            "Fix: give all images of a lesion its one dx, or give the different lesions different lesion_ids.")
    with unchanged(dataset):
        one_line(run_cli('melanoma-data', '--path', dataset, cwd=tmp_path), 1, line)
        with pytest.raises(DataError) as e: read_metadata(dataset)
    assert f'error: {e.value}' == line


# ---------------------------------------------------------------- 7. one line instead of a traceback

def _wait_for(p: Path, proc, timeout=120):
    t0 = time.time()
    while not p.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f'{p} never appeared'
        time.sleep(0.2)


def _terminal_sigint():
    "Run in the child before exec: Ctrl-C acts as in a terminal, also where these tests run with SIGINT ignored (a background job of a shell script)."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_melanoma_report(tmp_path, syn, unchanged):
    proj = project(tmp_path/'p', "import time\nfor _ in range(600): time.sleep(0.1)", '00_sleep.ipynb')
    proc = subprocess.Popen([str(BIN/'melanoma-report'), '--set', 'n_images=0', '--name', 'slow', '--no-render'], cwd=proj, env=env(syn), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_terminal_sigint)
    _wait_for(proj/'runs'/'slow'/'notebooks'/'00_sleep.ipynb', proc); time.sleep(3)
    with unchanged(proj/'nbs', syn):
        t0 = time.time(); proc.send_signal(signal.SIGINT)  # Ctrl-C to the command (a terminal also sends it to the kernel, whose own log may then show its shutdown)
        out, err = proc.communicate(timeout=120); secs = time.time() - t0
    assert proc.returncode == 130 and 'Traceback' not in err, err
    assert secs < 20, f'{secs:.0f} s from Ctrl-C to exit: the kernel was left to finish its cell (about 60 s), not stopped'
    ours = [l for l in err.splitlines() if l.startswith('error')]  # the rest is papermill's progress bar
    assert len(ours) == 1 and ours[0] == (f"error: interrupted (Ctrl-C) in 00_sleep.ipynb: kept the run folder {proj.resolve()/'runs'/'slow'} (0 notebook(s) done: none). "
                                            "Continue it with: melanoma-report --profile smoke --set n_images=0 --name slow --resume"), err
    assert err.splitlines()[-1].startswith(('error:', '[IPKernelApp]'))
    prov = json.loads((proj/'runs'/'slow'/'provenance.json').read_text())
    assert prov['notebooks'] == [dict(notebook='00_sleep.ipynb', status='interrupted', error='Ctrl-C', seconds=None)]


def test_ctrl_c_in_melanoma_data(tmp_path):
    proc = subprocess.Popen([str(BIN/'melanoma-data'), '--action', 'synth', '--path', tmp_path/'big', '--n-lesions', '20000'], cwd=tmp_path, env=env(),
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, preexec_fn=_terminal_sigint)
    _wait_for(tmp_path/'big'/'SYNTHETIC', proc); time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip() == (f"error: interrupted (Ctrl-C): the synthetic dataset in {tmp_path/'big'} is incomplete; "
                                                      "run the same command with --force to replace it."), err


@pytest.mark.parametrize('overrides', [['epochs=3'], 'epochs: 3', 3])
def test_overrides_must_be_a_mapping(overrides):
    with pytest.raises(ProfileError) as e: load_profile('smoke', overrides=overrides)
    assert str(e.value) == (f"parameter `overrides` = {overrides!r} is a {type(overrides).__name__}, not a mapping. "
                            'Give a mapping of profile keys to values, e.g. papermill -y "overrides: {epochs: 3, img_size: 64}" (melanoma-report: --set epochs=3 --set img_size=64).')


def test_every_notebook_passes_overrides_to_load_profile():
    "Each chapter hands its `overrides` parameter to load_profile as a value, so a list or string gets the message above, not a TypeError."
    for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]_*.ipynb')):
        src = nb.read_text()
        assert 'load_profile(profile, overrides=overrides)' in src and 'load_profile(profile, **overrides)' not in src, nb.name


def test_papermill_overrides_as_list(tmp_path):
    import papermill as pm
    nb = notebook(tmp_path/'00_fake.ipynb', FAKE)
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(str(nb), str(tmp_path/'out.ipynb'), parameters=dict(overrides=['epochs=3'], run_dir=str(tmp_path)), cwd=str(ROOT), progress_bar=False)
    assert e.value.ename == 'ProfileError' and '-y "overrides: {epochs: 3, img_size: 64}"' in e.value.evalue


def test_render_needs_a_run_folder(tmp_path, unchanged, run_cli):
    proj = project(tmp_path/'p'); (proj/'runs'/'notarun').mkdir(parents=True); (proj/'afile').write_text('x')
    with unchanged(proj):
        one_line(run_cli('melanoma-report', '--render', 'runs/missing', cwd=proj), 1,
                 'error: runs/missing does not exist: it is not a run folder. Fix: give a run folder (runs/<name>, e.g. runs/latest).')
        one_line(run_cli('melanoma-report', '--render', 'runs/notarun', cwd=proj), 1,
                 'error: runs/notarun is not a melanoma-report run folder (it has no provenance.json). Fix: give runs/<name> of a run (see runs/).')
        one_line(run_cli('melanoma-report', '--render', 'afile', cwd=proj), 1,
                 'error: afile is a file, not a run folder. Fix: give a run folder (runs/<name>, e.g. runs/latest).')


def test_bad_only_pattern(tmp_path, syn, unchanged, run_cli):
    proj = project(tmp_path/'p')
    with unchanged(proj):
        one_line(run_cli('melanoma-report', '--only', '(', cwd=proj, syn=syn), 1,
                 "error: --only '(' is not a regular expression (missing ), unterminated subpattern at position 0). Fix: e.g. --only '^00_'.")


# ---------------------------------------------------------------- 8. results follow the umask

@pytest.mark.parametrize('mask,mode', [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        a = atomic_write(tmp_path/'a.txt', 'x'); j = save_json({'a': 1}, tmp_path/'sub'/'r.json')
        atomic_write(tmp_path/'a.txt', 'y')  # a rewrite too
    finally: os.umask(old)
    assert [oct(f.stat().st_mode & 0o777) for f in (a, j)] == [oct(mode)] * 2
    assert sorted(p.name for p in tmp_path.rglob('*')) == ['a.txt', 'r.json', 'sub']


def test_run_outputs_follow_the_umask(finished):
    run = finished/'runs'/'done'
    assert oct((run/'provenance.json').stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    m = os.umask(0); os.umask(m); return m


# ---------------------------------------------------------------- the locked test set's folder: --test-data-path

@pytest.mark.parametrize('where,why', [('missing', 'does not exist'), ('empty', 'lacks labels.csv and images/'), ('syn', 'lacks labels.csv')])
def test_wrong_test_data_path_fails_up_front(tmp_path, syn, unchanged, run_cli, where, why):
    "An explicit test-set folder that is not one is an error before any notebook runs: never a fall-back, nothing written."
    proj = project(tmp_path/'p'); (tmp_path/'empty').mkdir()
    path = syn if where == 'syn' else tmp_path/where
    with unchanged(proj):
        one_line(run_cli('melanoma-report', '--set', 'n_images=100', '--test-data-path', path, '--no-render', cwd=proj, syn=syn), 1,
                 re.compile(rf'error: ISIC 2018 test set not found: given path {re.escape(str(path))} \({re.escape(why)}\); a location given explicitly is the only one tried\. Fix: .*'))
    assert not (proj/'runs').exists()


def test_test_data_path_reaches_the_notebooks_and_the_provenance(tmp_path, syn):
    "A given test-set folder is passed to the notebooks as `test_data_path` and recorded in provenance.json."
    from melanoma_nbdev.data import make_synthetic_test
    ts = make_synthetic_test(tmp_path/'ts', 14)
    proj = project(tmp_path/'p', FAKE + "\n(d/'test_data_path.txt').write_text(str(globals().get('test_data_path')))")
    r = cli('melanoma-report', '--set', 'n_images=100', '--test-data-path', str(ts), '--name', 't', '--no-render', cwd=proj, syn=syn)
    assert r.returncode == 0, r.stderr
    run = proj/'runs'/'t'
    assert (run/'results'/'test_data_path.txt').read_text() == str(ts)
    assert json.loads((run/'provenance.json').read_text())['command']['test_data_path'] == str(ts)
