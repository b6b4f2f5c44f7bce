"""Demo variants: same data and experts, different distillation settings; 3 networks x 300 epochs each."""
import json, sys, time
from pathlib import Path
from galaxy_distill.pipeline import prepare_dataset, train_expert_stage, distill_stage, evaluate_stage
from galaxy_distill.data.settings import PrepareSettings
from galaxy_distill.experts.settings import ExpertSettings
from galaxy_distill.experts.store import ExpertStore
from galaxy_distill.distill.settings import DistillSettings
from galaxy_distill.evaluate.settings import EvaluateSettings

def main():
    root = Path("/tmp/demo_exp/ws")
    dataset = prepare_dataset(PrepareSettings(dataset="simzoo", name="simzoo-demo", size=32, per_class=40, seed=0))
    experts_n = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    edir = root / f"experts{experts_n}"
    train_expert_stage(ExpertSettings(dataset=dataset.name, width=32, num_experts=experts_n, epochs=10, batch_size=32,
                                      parallel=experts_n, device="cpu"), dataset, edir)
    store = ExpertStore(edir)
    base = dict(dataset=dataset.name, experts=edir, method="stm", ipc=1, syn_steps=10, max_start_epoch=6, iterations=200,
                lr_img=100.0, eval_every=80, eval_networks=2, eval_epochs=200, stm_patience=80, stm_decay_every=10,
                stm_stop_factor=0.2, checkpoint_every=40, snapshot_every=40, device="cpu")
    variant = json.loads(sys.argv[1])
    name = "-".join(f"{k}{v}" for k, v in variant.items()) or "base"
    t = time.perf_counter()
    res = distill_stage(DistillSettings(**{**base, **variant}), dataset, root / f"run-{experts_n}-{name}", resume=True, store=store)
    dt = time.perf_counter() - t
    out = evaluate_stage(EvaluateSettings(run=res.run_dir, baselines=[], networks=3, epochs=300, device="cpu"), dataset=dataset)
    r = out.results[0]
    print(f"RESULT experts={experts_n} {name}: acc {100*r['acc_mean']:.1f} ± {100*r['acc_std']:.1f} it {res.iterations} distill {dt:.0f}s lr {r['lr']:.4f}", flush=True)

if __name__ == '__main__':
    main()
