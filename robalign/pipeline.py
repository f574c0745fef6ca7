"""`robalign pipeline`: the whole loop on a small default, one verb after another.

    demos -> pretrain -> rollouts of the pretrained policy -> triplet queries -> a simulated
    person with an objective answers them -> RAPL reward -> align -> report

Each stage is the verb of the same name, run through its own config with the overrides
below, and writes its own directory under output_dir. A stage whose directory is complete
is skipped, so rerunning the same command after a kill continues where it stopped (the
alignment resumes from its last round). The report compares the pretrained and the aligned
policy on the same held-out seeds:

    summary.json  before / after: success_rate, objective_mean, satisfied_share, drift;
                  stage_seconds: each verb's wall time
    report.html   that table, the alignment plot and side-by-side videos (videos/)
"""

from __future__ import annotations

import html
import json
import shutil
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from robalign.errors import RobalignError

DONE = ".complete"  # marks a finished preference store (it is written in place, not renamed)


def run_pipeline(cfg: DictConfig) -> dict:
    """The whole loop: demos, pretrain, preferences, reward, align, report."""
    import robalign.envs as envs
    from robalign.cli import VERBS, compose
    from robalign.data.outputs import default_output_dir

    envs.env_class(cfg.env.name)
    objective = envs.get_objective(cfg.objective)  # names a bad objective before any work
    if isinstance(cfg.objective, str) and ":" not in cfg.objective and getattr(objective, "env", None) not in (
            None, cfg.env.name):
        raise RobalignError(f"objective {cfg.objective!r} is for {objective.env}, not {cfg.env.name}; objectives "
                            f"of {cfg.env.name}: {', '.join(envs.objectives_for(cfg.env.name))}")
    out = Path(cfg.output_dir or default_output_dir("pipeline")).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    env = [f"env={cfg.env.name}", f"env.distractors={str(cfg.env.distractors).lower()}"]

    timings = out / "stage_seconds.json"  # wall time of each verb, kept across a resumed run

    def verb(name: str, *overrides: str):
        if cfg.progress:
            print(f"== robalign {name} {' '.join(overrides)}", flush=True)
        verb_cfg = compose(name, list(overrides))
        if "progress" in verb_cfg:
            verb_cfg.progress = bool(cfg.progress)
        t0 = time.perf_counter()
        result = VERBS[name](verb_cfg)
        seconds = json.loads(timings.read_text()) if timings.is_file() else {}
        seconds[name] = round(seconds.get(name, 0.0) + time.perf_counter() - t0, 1)
        timings.write_text(json.dumps(seconds, indent=1))
        return result

    steps = [f"max_steps={cfg.max_steps}"] if cfg.max_steps is not None else []
    demos, pretrain, prefs, reward, align = (out / s for s in ("demos", "pretrain", "prefs", "reward", "align"))
    if not (demos / "summary.json").is_file():
        verb("demos", *env, f"n={cfg.demos}", "preview=0", f"output_dir={demos}")
    if not (pretrain / "policy").is_dir():
        shutil.rmtree(pretrain, ignore_errors=True)  # a killed pretrain restarts (its checkpoints are minutes)
        verb("pretrain", *env, f"dataset={demos}", f"steps={cfg.pretrain_steps}", f"output_dir={pretrain}",
             f"threads={cfg.threads}")
    if not (prefs / DONE).is_file():
        shutil.rmtree(prefs, ignore_errors=True)
        verb("rollouts", *env, f"policy={pretrain / 'policy'}", f"n={cfg.rollouts}", f"store={prefs}",
             f"seed={cfg.rollout_seed}", *steps)
        verb("prefs queries", f"store={prefs}", f"n={cfg.queries}", "kind=triplet", "strategy=random")
        rationality = "null" if cfg.rationality is None else cfg.rationality  # null: the objective's own
        verb("prefs simulate", f"store={prefs}", f"objective={cfg.objective}", f"rationality={rationality}")
        (prefs / DONE).write_text("")
    if not (reward / "reward_config.json").is_file():
        verb("reward", f"method={cfg.reward_method}", f"prefs={prefs}", f"demos={demos}",
             f"objective={cfg.objective}", f"output_dir={reward}")
    if not (align / "metrics.json").is_file():
        resume = ["resume=true"] if (align / "align.json").is_file() else []
        verb("align", *env, f"method={cfg.method}", f"policy={pretrain / 'policy'}", "scorer=reward",
             f"reward={reward}", f"objective={cfg.objective}", f"demos={demos}", f"rounds={cfg.rounds}",
             f"states={cfg.states}", f"rollouts={cfg.rollouts_per_state}", f"eval_episodes={cfg.eval_episodes}",
             f"output_dir={align}", *steps, *resume)
    metrics = json.loads((align / "metrics.json").read_text())
    stages = json.loads(timings.read_text()) if timings.is_file() else {}
    summary = write_report(out, metrics, cfg, stages)
    print(f"wrote {out / 'report.html'} and {out / 'summary.json'}")
    return summary


FIGURES = ("success_rate", "objective_mean", "satisfied_share")


def write_report(out: Path, metrics: dict, cfg: DictConfig, stage_seconds: dict | None = None) -> dict:
    """summary.json and report.html (with side-by-side videos of the same held-out seeds);
    `stage_seconds`: each verb's wall time, shown and saved with the figures."""
    summary = {"env": metrics["env"], "objective": metrics["objective"], "method": metrics["method"],
               "scorer": metrics["scorer"], "episodes": metrics["after"]["episodes"]}
    for side in ("before", "after"):
        summary[side] = {k: metrics[side][k] for k in FIGURES}
        summary[side]["drift"] = metrics[side]["drift"]
    summary["stage_seconds"] = dict(stage_seconds or {})
    videos = _videos(out, metrics, cfg)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = "".join(f"<tr><th>{k.replace('_', ' ')}</th>{''.join(_cell(summary[s][k]) for s in ('before', 'after'))}</tr>"
                   for k in FIGURES)
    d = metrics["drift"]
    rows += f"<tr><th>KL to reference per step</th><td>0</td>{_cell(d['kl_per_step'])}</tr>"
    rows += f"<tr><th>demo NLL (denoising loss)</th>{_cell(d['demo_nll_reference'])}{_cell(d['demo_nll'])}</tr>"
    clips = "".join(f"<figure><figcaption>seed {seed}</figcaption><div class=pair>"
                    f"<video src='{b}' controls autoplay muted loop></video>"
                    f"<video src='{a}' controls autoplay muted loop></video></div>"
                    f"<p>before (left) / after (right)</p></figure>" for seed, b, a in videos)
    page = f"""<!doctype html><meta charset=utf-8><title>robalign pipeline: {html.escape(summary['env'])}</title>
<style>body{{font:15px system-ui;margin:2em;max-width:70em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .8em;text-align:right}}th{{text-align:left}}
.pair{{display:flex;gap:8px}}video{{width:320px}}</style>
<h1>{html.escape(summary['env'])}: aligned with {html.escape(str(summary['objective']))}</h1>
<p>{html.escape(summary['method'])} with the {html.escape(summary['scorer'])}; {summary['episodes']} held-out
episodes before and after (the same seeds).</p>
<table><tr><th></th><th>before</th><th>after</th></tr>{rows}</table>
<p>Wall time: {html.escape(', '.join(f'{k} {v / 60:.1f} min' for k, v in summary['stage_seconds'].items()))}
(total {sum(summary['stage_seconds'].values()) / 60:.1f} min).</p>
<h2>Rounds</h2><img src="align/alignment.png" alt="alignment rounds">
<h2>The same seeds, before and after</h2>{clips}
"""
    (out / "report.html").write_text(page)
    return summary


def _cell(value) -> str:
    if value is None:
        return "<td>-</td>"
    return f"<td>{value:.3f}</td>" if isinstance(value, float) else f"<td>{value}</td>"


def _videos(out: Path, metrics: dict, cfg: DictConfig) -> list[tuple[int, str, str]]:
    """256 px mp4s of the first held-out seeds, pretrained and aligned (episodes depend on
    their seed alone, so these are the evaluated episodes)."""
    from robalign.data.videos import write_mp4
    from robalign.policies import load_policy
    from robalign.policies.evaluation import env_options, run_serial

    seeds = list(range(metrics["eval_seed"], metrics["eval_seed"] + cfg.videos))  # align's held-out seeds
    shown = []
    for tag, path in (("before", metrics["policy"]), ("after", str(out / "align" / "policy"))):
        policy = load_policy(path)
        frames = {s: [] for s in seeds}
        options = env_options(policy, cfg.env.distractors, cfg.max_steps)
        run_serial(policy, metrics["env"], seeds, options, videos=frames)
        for s in seeds:
            write_mp4(out / "videos" / f"{tag}-seed{s}.mp4", frames[s])
    for s in seeds:
        shown.append((s, f"videos/before-seed{s}.mp4", f"videos/after-seed{s}.mp4"))
    return shown
