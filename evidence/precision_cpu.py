"""Small CPU experiment behind `models.full_precision` (issue 11): how far bf16 mixed precision moves a model's
probabilities from float32, which is why the k-fold chapter predicts in float32 on a GPU. A logistic-regression
head is fitted on ImageNet `tf_efficientnet_lite0` features (224 px) of images from outer folds 1-4, put on the
backbone as its linear head, and the same network predicts images of outer fold 0 in float32 and under bf16
autocast (channels-last, as `make_learner` trains on a GPU). Writes evidence/precision_cpu.json with provenance.

    cd <project> && OMP_NUM_THREADS=2 .venv/bin/python evidence/precision_cpu.py [n_fit n_eval]

CPU bf16 autocast is not the GPU's (other kernels), and a head fitted on frozen features is not a fine-tuned
network: the numbers say that bf16 moves probabilities by more than rounding, not by how much on the H200.
"""
import sys, time
from pathlib import Path
import numpy as np, torch
from sklearn.linear_model import LogisticRegression
from melanoma_nbdev.profiles import load_profile, provenance, save_json, project_root
from melanoma_nbdev.data import load_dataset, split, CLASSES
from melanoma_nbdev.models import create_backbone, Classifier
from melanoma_nbdev.augment import model_stats
from melanoma_nbdev.kfold import ensemble_dl

n_fit, n_eval = (int(a) for a in (sys.argv[1:3] if len(sys.argv) > 2 else (1200, 400)))
P = load_profile('full', device='cpu')
t0 = time.time(); torch.manual_seed(P.seed)
df = split(load_dataset(None, max_pixels=P.max_pixels, check=False), P)
fit, ev = df[df.fold != 0].sample(n_fit, random_state=P.seed), df[df.fold == 0].sample(n_eval, random_state=P.seed)
model, src = create_backbone(P.arch); model = Classifier(model, len(CLASSES)).eval()
def batches(d): return [torch.Tensor(b[0]).as_subclass(torch.Tensor) for b in ensemble_dl(d.path.tolist(), P.img_size, model_stats(P.arch), bs=100)]
def labels(d): return np.array([CLASSES.index(c) for c in d.dx.astype(str)])
with torch.no_grad(): feats = torch.cat([model.body(x) for x in batches(fit)]).numpy()
lr = LogisticRegression(max_iter=3000).fit(feats, labels(fit))
with torch.no_grad():
    model.head[1].weight.copy_(torch.tensor(lr.coef_, dtype=torch.float32)); model.head[1].bias.copy_(torch.tensor(lr.intercept_, dtype=torch.float32))
    xs = batches(ev)
    p32 = torch.cat([model(x).softmax(1) for x in xs])
    cl = model.to(memory_format=torch.channels_last)
    with torch.autocast('cpu', dtype=torch.bfloat16): p16 = torch.cat([cl(x.contiguous(memory_format=torch.channels_last)).float().softmax(1) for x in xs])
d = (p32 - p16).abs().max(1).values.numpy()
y = labels(ev); mel = CLASSES.index('mel')
res = dict(n_fit=n_fit, n_eval=n_eval, head_accuracy_fp32=float((p32.argmax(1).numpy() == y).mean()),
           max_abs_dp=dict(median=float(np.median(d)), p90=float(np.quantile(d, .9)), p99=float(np.quantile(d, .99)), max=float(d.max())),
           share_over_0_01=float((d > .01).mean()), top_class_agree=float((p32.argmax(1) == p16.argmax(1)).float().mean()),
           mel_max_abs_dp=float((p32[:, mel] - p16[:, mel]).abs().max()))
print(res)
prov = provenance(P, df.attrs['path'], what='small CPU experiment (not a result of the full run): float32 against bf16-autocast probabilities of one network',
                  arch=P.arch, weights=src, img_size=P.img_size, split='head fitted on images of outer folds 1-4, compared on images of outer fold 0',
                  torch_threads=torch.get_num_threads(), wall_seconds=round(time.time() - t0, 1), script='evidence/precision_cpu.py', result=res)
save_json(prov, (project_root() or Path.cwd())/'evidence'/'precision_cpu.json')
