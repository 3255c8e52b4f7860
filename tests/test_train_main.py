"tools/train-main: its refusals before anything is trained, and its --status table (the progress committed as progress/<run>/STATUS.md)."
import json, importlib.machinery, importlib.util
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_tool():
    loader = importlib.machinery.SourceFileLoader('train_main', str(ROOT/'tools'/'train-main'))
    spec = importlib.util.spec_from_loader('train_main', loader)
    mod = importlib.util.module_from_spec(spec); loader.exec_module(mod)
    return mod


def project(tmp_path, monkeypatch):
    "A project folder (settings.ini, pyproject.toml) as the working directory, with the real profiles."
    (tmp_path/'settings.ini').write_text((ROOT/'settings.ini').read_text()); (tmp_path/'pyproject.toml').write_text('')
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('MELANOMA_SETTINGS', str(tmp_path/'settings.ini'))
    return tmp_path


def fold(run, k, trained=None):
    d = run/'kfold'/'tf_efficientnet_lite0_ce'/f'fold{k}'; d.mkdir(parents=True)
    cfg = dict(fold=k, n_train=8011, n_valid=2004, train_seconds=726.7, history=[dict(valid_loss=0.5096)], **({'trained': trained} if trained else {}))
    (d/'config.json').write_text(json.dumps(cfg)); (d/'done.json').write_text('{"done": true}')


def test_status_names_each_folds_commit(tmp_path, monkeypatch):
    tm, root = load_tool(), project(tmp_path, monkeypatch)
    run = root/'runs'/'r'; run.mkdir(parents=True)
    from melanoma_nbdev.profiles import load_profile
    params = json.loads(json.dumps({k: v for k, v in load_profile('cpu').items() if k not in ('name', 'overrides')}, default=str))
    (run/'provenance.json').write_text(json.dumps(dict(profile='cpu', git_commit='abc', date_utc='2026-12-07T06:02', parameters=params, notebooks=[dict(notebook='00_data.ipynb', status='ok')])))
    fold(run, 0, dict(git_commit='1234567890ab', finished_utc='2026-12-08T00:11:37+00:00', machine='no GPU, 2 CPU cores'))
    fold(run, 1)  # trained before folds recorded their commit
    md = tm.status('r')
    assert '**2 of 5 fold models of the main configuration finished.** Not a result' in md, md
    assert '| 0 | 8,011 | 2,004 | 727 | 0.5096 |' in md and md.count('| trained at commit |') == 1 and 'profile changed' not in md, md
    rows = [l for l in md.splitlines() if l.startswith('| 0 ') or l.startswith('| 1 ')]
    assert rows[0].endswith('| 1234567890ab |') and rows[1].endswith('| not recorded |'), rows


def test_refuses_a_folder_without_a_run_and_another_profile(tmp_path, monkeypatch):
    tm, root = load_tool(), project(tmp_path, monkeypatch)
    with pytest.raises(SystemExit, match=r"holds no run \(no provenance.json\). Fix: first melanoma-report --profile cpu --name nothing"):
        tm.main(['--profile', 'cpu', '--name', 'nothing'])
    run = root/'runs'/'s'; run.mkdir(parents=True); (run/'provenance.json').write_text(json.dumps(dict(profile='smoke', overrides={})))
    with pytest.raises(SystemExit, match="is a run of profile 'smoke', not 'cpu'"): tm.main(['--profile', 'cpu', '--name', 's'])
    (run/'provenance.json').write_text(json.dumps(dict(profile='cpu', overrides={'epochs': 1})))
    with pytest.raises(SystemExit, match=r"overrides \{'epochs': 1\}; this tool trains a profile as it is"): tm.main(['--profile', 'cpu', '--name', 's'])
    assert not (run/'logs').exists()  # nothing was started
