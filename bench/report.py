"""Render docs/benchmarks.md from bench/results/*.json (so every number there comes from a run), and
the experiment logs kept by hand under bench/notes/ (figures from those runs and their notes).

python -m bench.report
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"
NOTES = ROOT / "bench" / "notes"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _pval(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.2g}" if p < 0.1 else f"{p:.2f}"


def _env(r: dict) -> str:
    e = r["environment"]
    return (
        f"_Run {e['when']} at commit `{e['commit']}` on {e['cpus']} CPUs ({e['machine']}), "
        f"torch {e['torch']}, "
        f"executorch {e['executorch']}; load average at start {e['load_avg_at_start'][0]:.2f}._"
    )


def _header(title: str, command: str, r: dict) -> list[str]:
    """A section's first lines: its title, the command that produced the result, the run's environment."""
    return [f"## {title}", "", command, "", _env(r), ""]


def _weights(run: dict) -> tuple[list[float], float]:
    """fp32 weight MiB per pair (recorded by newer runs, else derived from the arch) and corr(error, MiB)."""
    from chamlab.chamnet.spaces import SPACES

    space = SPACES.get(run["space"])
    mib = [p.get("weights_mib", 4 * space.params(space.parse(p["arch"])) / 2**20) for p in run["pairs"]]
    corr = float(np.corrcoef(mib, [p["error_pct"] for p in run["pairs"]])[0, 1])
    return mib, corr


#: a fidelity run whose protocol runs disagree by more than this (median CV %) was disturbed (the
#: protocol's target is <= 3 %)
DISTURBED_CV_PCT = 3.0


def fidelity_variants(r: dict, title: str) -> list[str]:
    """The fidelity benchmark since calibration: every variant on held-apart networks vs the floor."""
    out = [
        f"## {title}",
        "",
        "`python -m bench.latency_fidelity` ("
        + ", ".join(f"--{k} {v}" for k, v in r["args"].items() if k != "out" and v)
        + ")",
        "",
        _env(r),
        "",
        *(
            [
                f"This run produced only {', '.join(r['args']['only'])}; the other pieces are kept from "
                "earlier runs of the benchmark with the same arguments (it resumes per space and thread "
                "count; each piece's load is in the second table, its calibration features and coefficients "
                "in bench/results/latency_fidelity.json).",
                "",
            ]
            if r["args"].get("only")
            else []
        ),
        (
            "Held-apart networks only (never the calibration networks). Truth: the noise protocol's median "
            f"({r['args']['repeats']} separate interleaved sessions, windows further than "
            f"{r['args'].get('redo_pct')} % from the median re-measured up to {r['args'].get('max_redo')} "
            "times). *raw*: the plain LUT sum; *corrected*: minus (n_ops - 1) invocation overheads; "
            "*calibrated*: the `chamlab calibrate --repeats` fit from the calibration networks' protocol "
            "medians (with the op recheck where the run has one, below); *interpolated*: calibrated (as "
            "measured), from a LUT holding only the calibration networks' ops, "
            "the rest predicted by the op-level model; *noise floor*: a second independent run of the "
            "protocol against the first; *single run floor*: one session against the median of the others. "
            "*random archs only*: the same variants on the random test archs alone (the space's reference "
            "networks left out), the set the interpolated-ops target is defined on."
            if "protocol" in r["runs"][0]
            else "Held-apart networks only (never the calibration networks). Truth: the median of "
            f"{r['args']['repeats']} separate measurements (separate runner processes). *raw*: the plain "
            "LUT sum; *corrected*: minus (n_ops - 1) invocation overheads; *calibrated*: the `chamlab "
            "calibrate` fit from the calibration networks' first measurement; *interpolated*: calibrated, "
            "from a LUT holding only the calibration networks' ops, the rest predicted by the op-level "
            "model; *noise floor*: one measurement against the median of the others."
        ),
        "",
        "| space | threads | variant | n | within ±10 % | within ±5 % | MAPE % | mean error % "
        "| max abs error % | Spearman | Kendall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        rows = list(run["summaries"].items()) + [
            (f"{v}, random archs only", s) for v, s in (run.get("summaries_random") or {}).items()
        ]
        for label, s in rows:
            out.append(
                f"| {run['space']} | {run['threads']} | {label.replace('_', ' ')} | {s['n']} | "
                f"{s['within_10pct']:.0%} | {s['within_5pct']:.0%} | {s['mape_pct']:.1f} | "
                f"{s['mean_error_pct']:+.1f} | {s['max_abs_error_pct']:.1f} | {s['spearman']:.3f} | "
                f"{s['kendall']:.3f} |"
            )
    paired = [run for run in r["runs"] if any((run.get("paired_with_floor") or {}).values())]
    if paired:
        out += [
            "",
            "Paired with the noise floor, network by network: how many networks only the variant "
            "predicts within ±10 %, how many only the floor (the second protocol run) measures within "
            "±10 %, and the exact two-sided McNemar p on those networks (with a few dozen networks one "
            "network is several points of the share within ±10 %: a small p says the gap to the floor "
            "is real, a large one that these networks cannot tell the two apart).",
            "",
            "| space | threads | networks | variant | variant only | floor only | McNemar p |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in paired:
            for which, by_variant in run["paired_with_floor"].items():
                for v, x in (by_variant or {}).items():
                    if v in ("raw", "corrected"):
                        continue
                    out.append(
                        f"| {run['space']} | {run['threads']} | {which} ({x['n']}) | {v.replace('_', ' ')} | "
                        f"{x['variant_only']} | {x['floor_only']} | {_pval(x['mcnemar_p'])} |"
                    )
    out += [
        "",
        "| space | threads | calibration networks | calibration LOO within ±10 % | LUT ops (interpolated "
        "variant) | mean interpolated ops / distinct ops | op model LOO median abs % (n) | load avg "
        "start -> end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        c, i = run["calibration"], run["interpolation"]
        loo = i["op_model_loo_median_abs_pct"]
        out.append(
            f"| {run['space']} | {run['threads']} | {len(c['networks'])} | {c['loo']['within_10pct']:.0%} | "
            f"{i['lut_ops']} | {i['mean_interpolated_ops']:.1f} / {i['mean_distinct_ops']:.1f} | "
            f"{'-' if loo is None else f'{loo:.1f}'} ({i['op_model_loo_n']}) | "
            f"{run['load_avg_start'][0]:.1f} -> {run['load_avg_end'][0]:.1f} |"
        )
    across = [run for run in r["runs"] if run.get("between_sessions")]
    if across:
        out += [
            "",
            "Between sessions (`--compare-with`): this run's protocol medians against the same networks' "
            "in earlier runs of the benchmark, hours apart (the floor a prediction made in one session "
            "meets in another; the in-run noise floor compares two protocol runs minutes apart), as "
            "measured and once the device-wide shift (the median ratio, which a calibration in either "
            "session absorbs) is divided out; and this run's calibrated predictions judged by those "
            "earlier medians.",
            "",
            "| space | threads | earlier run | networks | medians within ±10 % (MAPE %) | device-wide shift "
            "| within ±10 % after the shift (MAPE %) | calibrated within ±10 % of the earlier medians |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in across:
            for b in run["between_sessions"]:
                m, a = b["medians"], b["medians_after_shift"]
                out.append(
                    f"| {run['space']} | {run['threads']} | {b['source']} ({b['when'][:16]}) | {m['n']} | "
                    f"{m['within_10pct']:.0%} ({m['mape_pct']:.1f}) | {b['shift_pct']:+.1f} % | "
                    f"{a['within_10pct']:.0%} ({a['mape_pct']:.1f}) | "
                    f"{b['calibrated_then']['within_10pct']:.0%} |"
                )
    rechecked = [run for run in r["runs"] if run.get("recheck")]
    if rechecked:
        out += [
            "",
            "Op recheck (`calibrate --recheck`): ops of the calibration networks re-measured after the "
            "networks, how far they moved since profiling (the median change, a device-wide shift; then "
            "the median absolute change of one op about it), and the weight of the op-level model per op "
            "kind that *calibrated* sums with; *calibrated measured* is the same fit on the LUT as measured "
            "(its leave-one-out beside the recheck's).",
            "",
            "| space | threads | ops re-measured | shift | median abs change | model weight "
            "| calibration LOO within ±10 % (as measured) | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in rechecked:
            k = run["recheck"]
            w = ", ".join(f"{kind} {v:.2f}" for kind, v in sorted(k["weights"].items()))
            out.append(
                f"| {run['space']} | {run['threads']} | {k['n_ops']} | {k['shift_pct']:+.1f} % | "
                f"{k['median_abs_pct']:.1f} % | {w} | {run['calibration']['loo']['within_10pct']:.0%} "
                f"({k['calibration_measured_loo']['within_10pct']:.0%}) | {k['seconds']:.0f} |"
            )
    if all("protocol" in run for run in r["runs"]):
        out += [
            "",
            "Noise protocol: median over networks of the CV of their p50 across single sessions (first "
            "pass), across the kept sessions (disturbed windows re-measured), and between independent "
            "protocol runs (the floor that matters for the truth above); windows re-measured; the "
            "median within-run CV of the LUT's ops (robust CV of each op's samples).",
            "",
            "| space | threads | networks | single-session CV % | kept CV % | between protocol runs CV % "
            "| windows re-measured / kept | op within-run CV % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for run in r["runs"]:
            p = run["protocol"]
            between = p["between_protocol_runs_cv_median_pct"]
            op_cv = p["op_within_run_cv_median_pct"]
            out.append(
                f"| {run['space']} | {run['threads']} | {p['networks']} | "
                f"{p['single_session_cv_median_pct']:.2f} | {p['kept_cv_median_pct']:.2f} | "
                f"{'-' if between is None else f'{between:.2f}'} | "
                f"{p['replaced_windows']} / {p['sessions_windows']} | "
                f"{'-' if op_cv is None else f'{op_cv:.2f}'} |"
            )
        for run in r["runs"]:
            p = run["protocol"]
            between = p["between_protocol_runs_cv_median_pct"]
            if between is not None and between > DISTURBED_CV_PCT:
                out += [
                    "",
                    f"**{run['space']}, {run['threads']} thread(s): the measurement did not reproduce** "
                    f"(CV between independent protocol runs {between:.1f} %, single sessions "
                    f"{p['single_session_cv_median_pct']:.1f} %, above the {DISTURBED_CV_PCT:g} % the "
                    "protocol is meant to reach; load at start and end in the table below, whether "
                    "neighbours or the machine itself moved it): its rows say how the predictor compares "
                    "with measurements taken in the same protocol run as its calibration, not whether it "
                    "meets the fidelity targets.",
                ]
    return out


def fidelity(r: dict) -> list[str]:
    if "summaries" in r["runs"][0]:
        return fidelity_variants(r, "Latency fidelity: raw, corrected, calibrated, interpolated")
    out = [
        "## Latency fidelity: LUT prediction vs measured whole network",
        "",
        "`python -m bench.latency_fidelity` ("
        + ", ".join(f"--{k} {v}" for k, v in r["args"].items() if k != "out" and v)
        + ")",
        "",
        _env(r),
        "",
        "Each run profiles every op into a fresh LUT (`--force`), then measures the networks in one "
        "session. *Corrected* is chamlab's default prediction (LUT sum minus (n_ops - 1) invocation "
        "overheads); *raw* is the paper's plain LUT sum; *stable only* drops networks whose "
        "measurement stayed flagged unstable.",
        "",
        "| space | threads | prediction | n | within ±10 % | within ±5 % | MAPE % | mean error % "
        "| max abs error % | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        for label, key in (
            ("corrected", "summary"),
            ("raw sum", "summary_raw_sum"),
            ("corrected, stable only", "summary_stable_only"),
        ):
            s = run.get(key)
            if not s:
                continue
            out.append(
                f"| {run['space']} | {run['threads']} | {label} | {s['n']} | {s['within_10pct']:.0%} | "
                f"{s['within_5pct']:.0%} | {s['mape_pct']:.1f} | {s['mean_error_pct']:+.1f} | "
                f"{s['max_abs_error_pct']:.1f} | {s['spearman']:.3f} |"
            )
    out += [
        "",
        "| space | threads | ops profiled | invocation overhead ms | profile s | measure networks s "
        "| weights MiB (min-max) | corr(error, weights) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in r["runs"]:
        ov = run["invocation_overhead_ms"]
        ov_text = "-" if ov is None else f"{ov:.4f}"
        mib, corr = _weights(run)
        out.append(
            f"| {run['space']} | {run['threads']} | {run['ops_profiled']} | {ov_text} | "
            f"{run['profile_s']:.0f} | {run['networks_measure_s']:.0f} | {min(mib):.1f}-{max(mib):.1f} | "
            f"{corr:+.2f} |"
        )
    out += [
        "",
        "*corr(error, weights)*: Pearson correlation of the corrected prediction's error with the network's "
        "fp32 weight size (params x 4 bytes, from the arch); negative means networks with more weights run "
        "slower than the sum of their cache-warm ops.",
    ]
    return out


def int8_speedup(r: dict) -> list[str]:
    """int8 vs fp32: per op kind (profiled side by side in one LUT) and for whole reference networks."""
    out = [
        "## int8 vs fp32",
        "",
        "`python -m bench.int8_speedup` ("
        + ", ".join(f"--{k} {v}" for k, v in r["args"].items() if k != "out" and v)
        + ")",
        "",
        _env(r),
        "",
        "Ratio = int8 p50 / fp32 p50 (below 1: int8 is faster), XNNPACK on this machine's x86 CPU, default "
        "recipe `xnnpack-int8-pc-v1`. Per op kind: the median ratio over the distinct ops of "
        f"MobileNetV2-1.0 at {r['args']['resolution']} px, both dtypes profiled into one LUT in one run. "
        "Networks: fp32 and int8 measured back to back, "
        f"{r['args']['repeats']} times each; ratio of the medians. *quant_edge share*: the boundary "
        "quantize/dequantize pairs the int8 prediction subtracts, as a share of the int8 LUT sum.",
        "",
        "| threads | "
        + " | ".join(sorted(r["per_op"][0]["by_kind"]))
        + " | quant_edge share | load avg start -> end |",
        "|---|" + "---|" * (len(r["per_op"][0]["by_kind"]) + 2),
    ]
    for run in r["per_op"]:
        kinds = " | ".join(f"{v['median_ratio']:.2f} (n={v['n']})" for _, v in sorted(run["by_kind"].items()))
        out.append(
            f"| {run['threads']} | {kinds} | {run['quant_edge_share_of_sum']:.1%} | "
            f"{run['load_avg_start'][0]:.1f} -> {run['load_avg_end'][0]:.1f} |"
        )
    if not r["networks"]:
        return [*out, "", "_Whole networks: not run yet._"]
    names = list(r["networks"][0]["networks"])
    out += [
        "",
        "| threads | " + " | ".join(names) + " | median | load avg start -> end |",
        "|---|" + "---|" * (len(names) + 2),
    ]
    for run in r["networks"]:
        cells = []
        for n in names:
            v = run["networks"][n]
            f = float(np.median(v["fp32_ms"]))
            cells.append(f"{v['ratio']:.2f} ({f:.1f} ms)")
        out.append(
            f"| {run['threads']} | {' | '.join(cells)} | {run['median_ratio']:.2f} | "
            f"{run['load_avg_start'][0]:.1f} -> {run['load_avg_end'][0]:.1f} |"
        )
    out += [
        "",
        "Network cells: int8/fp32 ratio of the medians (fp32 p50 in brackets), `chamlab measure`'s pipeline.",
    ]
    if r.get("interleaved"):
        out += [
            "",
            "Interleaved in one process (fp32 and int8 programs alternating, "
            f"{r['interleaved'][0]['rounds']} rounds): ratio of the **minimum** times (fp32 min / int8 min "
            "ms in brackets). Under the load below (2 cores), an execution longer than a few ms is rarely "
            "left unpreempted: a 1-thread minimum several times its 2-thread minimum marks a cell the load "
            "spoiled; the short networks (ChamNet-C..F) are the reliable cells.",
            "",
            "| threads | " + " | ".join(names) + " | load avg at start |",
            "|---|" + "---|" * (len(names) + 1),
        ]
        for run in r["interleaved"]:
            cells = [
                f"{v['ratio_min']:.2f} ({v['fp32_min_ms']:.1f} / {v['int8_min_ms']:.1f})"
                for v in (run["networks"][n] for n in names)
            ]
            out.append(f"| {run['threads']} | {' | '.join(cells)} | {run['load_avg_start'][0]:.1f} |")
    return out


def quant_speed(r: dict) -> list[str]:
    """int8 quantization time: the stock XNNPACKQuantizer against chamlab's post-training one."""
    sm = r["summary"]
    out = [
        *_header(
            "int8 quantization time: without the QAT-only patterns",
            f"`python -m bench.quant_speed --repeats {r['repeats']} --resolution {r['resolution']}`",
            r,
        ),
        "Seconds of `quant.quantize` (export, prepare, calibrate, convert) with ExecuTorch's stock "
        "`XNNPACKQuantizer` and with chamlab's (the same without its QAT conv + batch-norm patterns, which "
        "match nothing after `prepare_pt2e` folds the batch norms, but are each built by a fresh "
        "`torch.export` on every call); the median of the interleaved repeats. *identical*: the "
        "converted module's graph code, tensors and output on a fixed input, and for batch-1 items the "
        "lowered `.pte` bytes, are the same for both. `dynamic:` rows are the training oracle's path "
        "(real-shaped calibration batches, a dynamic batch dimension).",
        "",
        f"**{sm['identical']} of {sm['items']} items identical; median time ratio (ours / stock) "
        f"{sm['median_ratio']:.2f}, total {sm['stock_s_total']:.0f} s -> {sm['ptq_s_total']:.0f} s.**",
        "",
        "| item | stock s | ours s | ratio | identical |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        item = row["item"] if len(row["item"]) <= 70 else row["item"][:67] + "..."
        out.append(
            f"| `{item}` | {row['stock_s']:.2f} | {row['ptq_s']:.2f} | {row['ratio']:.2f} | "
            f"{'yes' if row['identical'] else '**no**'} |"
        )
    return out


def cost(r: dict, title: str = "Profiling cost: the macro-cifar10 LUT") -> list[str]:
    out = [
        f"## {title}",
        "",
        "`python -m bench.profiling_cost "
        + " ".join(
            f"--{k} {v}"
            for k, v in r["args"].items()
            if k in ("space", "threads", "sample", "resolution") and v
        )
        + "`",
        "",
        _env(r),
        "",
        *([r["note"], ""] if r.get("note") else []),
        "| cache | ops | total s | export s | export s/op | measure s | measure s/op | unstable ops |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in ("cold_cache", "warm_cache"):
        c = r[label]
        out.append(
            f"| {label.replace('_', ' ')} | {c['ops']} | {c['total_s']:.1f} | {c['export_s']:.1f} | "
            f"{c['export_s_per_op']:.2f} | {c['measure_s']:.1f} | {c['measure_s_per_op']:.2f} | "
            f"{c['unstable_ops']} |"
        )
    out += [
        "",
        "Export s/op is over the ops exported in that run (all of them cold, none warm); exports run in "
        f"{r['cpus']} worker processes. Measure s/op includes the runner process start-up.",
        *(
            [
                f"Runner pinned to CPU(s) {r['runner_affinity']}; other work on the other CPU ran at "
                "idle priority."
            ]
            if r.get("runner_affinity")
            else []
        ),
    ]
    return out


def stability(r: dict) -> list[str]:
    s = r["summary"]
    out = [
        *_header(
            "Stability: repeated measurements of the same op",
            f"`python -m bench.stability --repeats {r['args']['repeats']} --threads {r['args']['threads']}`",
            r,
        ),
        f"Median CV over the ops: **{s['median_op_cv']:.2%}** (target <= 2 %), max {s['max_op_cv']:.2%}; "
        f"whole network: {s['network_cv']:.2%}.",
        "",
        "| subject | mean p50 ms | CV of the p50s | repeats flagged unstable |",
        "|---|---|---|---|",
    ]
    for sub in r["subjects"]:
        out.append(
            f"| `{sub['subject']}` | {sub['mean_p50_ms']:.4f} | {sub['cv']:.2%} | "
            f"{sub['unstable_repeats']}/{len(sub['p50s_ms'])} |"
        )
    return out


def runtime_import(r: dict) -> list[str]:
    out = [
        *_header(
            "Runner start-up: importing the ExecuTorch runtime",
            f"`python -m bench.runtime_import --repeats {r['args']['repeats']}`",
            r,
        ),
        "| what a fresh interpreter imports | median s |",
        "|---|---|",
    ]
    out += [f"| {v['variant']} | {v['median_s']:.2f} |" for v in r["variants"]]
    return out


def toolchain_start(r: dict) -> list[str]:
    """An export worker's toolchain import, the edge-op table's YAML parse, and one worker for a
    workflow's exports against one per program."""
    y, ex = r["edge_yaml"], r["exports"]
    out = [
        *_header(
            "Export workers: starting the ExecuTorch toolchain",
            f"`python -m bench.toolchain_start --repeats {r['repeats']}`",
            r,
        ),
        "Every export runs in a worker process, which imports the toolchain first. Medians of the repeats.",
        "",
        "| what | median s |",
        "|---|---|",
        "| a fresh interpreter imports `executorch.exir` and the XNNPACK partitioner | "
        f"{r['import']['median_s']:.2f} |",
        f"| of which: parsing `edge.yaml` ({y['bytes']:,} bytes), pure-Python ruamel.yaml | "
        f"{y['pure-python']['median_s']:.2f} |",
        f"| the same with ruamel.yaml.clib's C parser (a chamlab dependency) | "
        f"{y['libyaml (ruamel.yaml.clib)']['median_s']:.2f} |",
        "",
        f"Both parsers give the same data: {'yes' if y['same_data'] else '**no**'}. Three of macro-cifar10's "
        "reference networks exported one after another (fp32, XNNPACK), as `adapt` exports its winner, "
        "the final weights and their int8 sibling; the workers' CPU seconds from `getrusage`. The same "
        f"programs either way: {'yes' if r['same_programs'] else '**no**'}.",
        "",
        "| three exports | median wall s | median worker CPU s |",
        "|---|---|---|",
    ]
    for name, v in ex.items():
        out.append(f"| {name} | {v['median_wall_s']:.1f} | {v['median_worker_cpu_s']:.1f} |")
    workers = r.get("three_workers")  # added 2026-12-08; earlier results lack it
    if workers:
        out += [
            "",
            "Three workers started at once, each needing the toolchain (as `adapt --oracle train "
            "--workers 2` starts two training workers and an export worker), in a fresh interpreter that "
            "joins them: spawned, as chamlab starts its workers, against forked from a fork server that "
            "imported the toolchain once (not what chamlab does; a lead in docs/development.md). Wall "
            "seconds only.",
            "",
            "| three workers | median wall s | runs |",
            "|---|---|---|",
        ]
        for kind, w in workers.items():
            runs = ", ".join(f"{t:.1f}" for t in w["times_s"])
            out.append(f"| {kind} | {w['median_wall_s']:.1f} | {runs} |")
    return out


def lut_merge(r: dict) -> list[str]:
    a = r["args"]
    out = [
        *_header(
            "LUT merge: 10 LUTs of 10k rows",
            f"`python -m bench.lut_merge` (--luts {a['luts']}, --rows {a['rows']}, --samples {a['samples']}, "
            f"--repeats {a['repeats']})",
            r,
        ),
        f"{a['luts']} input LUTs of {a['rows']} rows, {a['samples']} samples per row "
        f"({r['input_mib_per_scenario']:.1f} MiB of Parquet per scenario). Each figure is the median of "
        f"{a['repeats']} runs, each in a fresh interpreter: read + check every input, merge, write the "
        "output atomically, timed inside the process after the imports; the last row is the "
        "`chamlab lut merge` command timed from outside (interpreter start and imports included). "
        "*Arrow peak* is the "
        "peak of Arrow's memory pool, *peak RSS* the process's "
        "`ru_maxrss` (imports included: the RSS after the imports is given beside it). *Naive* reads "
        "each file with `Lut.read` (per-row checks) and folds them with `Lut.upsert`.",
        "",
        "| scenario | rows in | rows out | seconds | Arrow peak MiB | peak RSS MiB (after imports) |",
        "|---|---|---|---|---|---|",
    ]
    for s in r["scenarios"]:
        arrow = f"{s['arrow_peak_mib']:.0f}" if "arrow_peak_mib" in s else "-"
        after = f" ({s['rss_after_imports_mib']:.0f})" if "rss_after_imports_mib" in s else ""
        out.append(
            f"| {s['scenario']} | {s['rows_in']} | {s['rows_out']} | {s['seconds']:.2f} | {arrow} | "
            f"{s['peak_rss_mib']:.0f}{after} |"
        )
    out += ["", f"Naive / vectorised (same keys, newest), same run: {r['naive_over_vectorised']:.1f}x."]
    by = {s["scenario"]: s for s in r["scenarios"]}
    pairs = [(k, f"{k}, folded") for k in ("same keys, newest", "disjoint devices, newest")]
    if all(a in by and b in by for a, b in pairs):
        out += [
            "",
            "Folding the inputs in one at a time (what merging's associativity allows) instead of "
            "merging all at once: "
            + "; ".join(
                f"{a}: {by[b]['seconds'] / by[a]['seconds']:.2f}x the time, "
                f"{by[b]['arrow_peak_mib'] / by[a]['arrow_peak_mib']:.2f}x the Arrow peak"
                for a, b in pairs
            )
            + ". `chamlab lut merge` merges all at once.",
        ]
    return out


def farm_throughput(r: dict) -> list[str]:
    out = [
        *_header(
            "Farm controller throughput",
            f"`python -m bench.farm_throughput` (--sleep-s {r['sleep_s_per_op']}, --repeats {r['repeats']}, "
            f"--arch {r['arch']})",
            r,
        ),
        f"Emulated `local` devices whose runner is a stand-in that sleeps {r['sleep_s_per_op']} s per op "
        "and returns a fixed result (the shim's `python` is a script running the agent's own batch loop "
        "with that measurement injected): the farm, transport, POSIX "
        "driver, device locks, staging, results, LUT writes, drift and reports are the real code, but no "
        "ExecuTorch runner competes for this 2-core machine's CPU, so the figures measure the "
        f"controller. Each device profiles {r['ops_per_device']} ops: "
        f"{r['runner_s_per_device']:.1f} s of pure runner time, which bounds a device at "
        f"{60 / r['runner_s_per_device']:.1f} devices/min. Wall time of the whole `run_farm` (in-process "
        f"executor), median of {r['repeats']} fresh runs (new device names and farm folder each time, "
        "artifact cache warm).",
        "",
        "| devices | median wall s | devices/min | ideal devices/min | efficiency | overhead s "
        "| CPU s per device | controller CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for x in r["results"]:
        out.append(
            f"| {x['devices']} | {x['median_wall_s']:.2f} | {x['devices_per_min']:.1f} | "
            f"{x['ideal_devices_per_min']:.1f} | {x['efficiency']:.2f} | {x['overhead_s']:.2f} | "
            f"{x['median_cpu_s_per_device']:.2f} | "
            + (f"{x['median_controller_cpu_s']:.2f} |" if "median_controller_cpu_s" in x else "|")
        )
    rows = r["results"]
    base = rows[0]["efficiency"]
    knee = next((x for x in rows if x["efficiency"] < base - 0.10), None)
    cpu = [x["median_cpu_s_per_device"] for x in rows]
    last = rows[-1]
    cpus = r["environment"]["cpus"]
    out += [
        "",
        "*Overhead* is the median wall time minus one device's pure runner time; *CPU s per device* is the "
        "user + system time of the controller and its children (drivers, shells, stand-ins) divided by "
        "the device count.",
        "",
        (
            f"Scaling holds within 10 points of one device's efficiency up to "
            f"{max(x['devices'] for x in rows if x['efficiency'] >= base - 0.10)} devices and falls off from "
            f"{knee['devices']} ({knee['efficiency']:.2f}; "
            f"{last['devices']} devices: {last['efficiency']:.2f}). "
            if knee
            else f"Efficiency stays within 10 points of one device's up to {last['devices']} devices. "
        )
        + f"The CPU cost per device is flat ({min(cpu):.2f}-{max(cpu):.2f} s for its {r['ops_per_device']} "
        "ops: the driver and its shells, the stand-in runner's start, staging, and the LUT write), so the "
        "work per device does not grow with the farm; what runs out is "
        f"this VM's CPU: {last['devices']} devices need "
        f"{last['median_cpu_s_per_device'] * last['devices']:.1f} "
        f"CPU-s within a {last['median_wall_s']:.1f} s run on {cpus} CPUs shared with other work (load "
        "average above). "
        + (
            f"The controller process itself (the serial part: its device threads share one GIL) spent "
            f"{last['median_controller_cpu_s']:.2f} CPU-s for {last['devices']} devices "
            f"({last['median_controller_cpu_s'] / last['devices']:.3f} s per device), so it alone would "
            f"fill one core only at about {60 * last['devices'] / last['median_controller_cpu_s']:.0f} "
            f"devices per minute (of {r['ops_per_device']} ops each); the rest is the child processes "
            "(drivers, shells, runners), which on "
            "an ssh or adb farm run on the devices, not on the controller's host. "
            if last.get("median_controller_cpu_s")
            else ""
        )
        + "With real ExecuTorch runners on this host the runners' own CPU (each run's runner imports torch: "
        "see the runner start-up section) is the limit long before the controller; on a farm the "
        "runners execute on the phones and the controller's cost is what this table shows.",
    ]
    return out


def transport_overhead(r: dict) -> list[str]:
    s, args = r["summary"], r["args"]
    out = [
        *_header(
            "Transport overhead: the macro-cifar10 LUT over local, ssh and adb",
            f"`python -m bench.transport_overhead --rounds {args['rounds']} --policy {args['policy']}`",
            r,
        ),
        "All three targets are this machine (same shim runner, same measurement policy): ssh goes through "
        "a real OpenSSH server on 127.0.0.1, adb through the real adb server to the device-side test peer "
        "(a stand-in for a phone, not a phone). Each round profiles all ops into a fresh LUT on each "
        "target (rotated order, warm artifact cache); the ratio is to the local run of the same round.",
        "",
        "| round | order | local s | ssh s | adb s | ssh / local | adb / local |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, rd in enumerate(r["rounds"], 1):
        loc = rd["local"]["wall_s"]
        out.append(
            f"| {i} | {', '.join(rd['order'])} | {loc:.1f} | {rd['ssh']['wall_s']:.1f} | "
            f"{rd['adb']['wall_s']:.1f} | {rd['ssh']['wall_s'] / loc:.3f} | {rd['adb']['wall_s'] / loc:.3f} |"
        )
    out += [
        "",
        f"Median overhead over local: ssh **{s['ssh']['median_overhead_pct']:+.1f} %**, adb "
        f"**{s['adb']['median_overhead_pct']:+.1f} %** (target: under 10 %). At this machine's load "
        "(other jobs kept the load average near 8-12 on its 2 cores) the same work varies by tens of "
        "percent between rounds, more than any transport adds: the fixed cost below isolates what a "
        "transport adds.",
    ]
    return out


def transport_fixed_cost(r: dict) -> list[str]:
    m, s = r["medians"], r["summary"]
    out = [
        *_header(
            "Transport fixed cost: the work around the measuring",
            f"`python -m bench.transport_fixed_cost --repeats {r['args']['repeats']}`",
            r,
        ),
        f"What a transport adds to one LUT run of {r['tasks']} ops: push the run directory (artifacts and "
        "agent), start the driver and stream one line per op, pull `results.jsonl`, remove the run "
        "directory. Medians of the repeats (interleaved, same peers as above):",
        "",
        "| transport | push s | run s | pull s | cleanup s | total s |",
        "|---|---|---|---|---|---|",
    ]
    for n in ("local", "ssh", "adb"):
        x = m[n]
        out.append(
            f"| {n} | {x['push_s']:.3f} | {x['run_s']:.3f} | {x['pull_s']:.3f} | {x['cleanup_s']:.3f} | "
            f"{x['total_s']:.3f} |"
        )
    if r.get("local_lut_wall_s"):
        out += [
            "",
            "Against the median local LUT run of the overhead benchmark "
            f"({r['local_lut_wall_s']:.1f} s): ssh adds **{s['ssh']['pct_of_local_lut']:.1f} %**, adb "
            f"**{s['adb']['pct_of_local_lut']:.1f} %** (adb's push is one sync connection per file).",
        ]
    return out


def fault_recovery(r: dict) -> list[str]:
    out = [
        *_header(
            "Fault recovery: a run interrupted by killing the device",
            f"`python -m bench.fault_recovery --kills {r['args']['kills']} --policy {r['args']['policy']}`",
            r,
        ),
        "The adb test peer (the stand-in for a phone) is SIGKILLed when the driver reports the 4th, 8th "
        "and 12th op of successive attempts; after each kill the peer comes back with the same serial and "
        "the same command is run again. Attempt 1 includes exporting every op into a cold artifact cache.",
        "",
        "| attempt | killed at op | outcome | wall s |",
        "|---|---|---|---|",
    ]
    for i, a in enumerate(r["attempts"], 1):
        what = (
            f"completed, {a['measured']} measured, {a['failed_ops']} failed"
            if a["completed"]
            else f"stopped: {a['done']} done, {a['failed']} failed, {a['missing']} missing"
        )
        out.append(f"| {i} | {a['kill_at_op'] or '-'} | {what} | {a['wall_s']:.1f} |")
    out += [
        "",
        f"Final LUT: {r['lut_rows']} rows for {r['planned_ops']} planned ops: **{r['lost_rows']} lost, "
        f"{r['duplicated_rows']} duplicated**.",
    ]
    return out


def gpu_check(r: dict) -> list[str]:
    out = [
        "## GPU check: the torch-cuda runner through the pipeline (`bench/gpu_check.py`)",
        "",
        f"{r['gpu']}, torch {r['torch']} (CUDA {r['cuda']}), {r['when']}; ExecuTorch unimportable during "
        f"the run. macro-cifar10 archs {', '.join(r['archs'])}: every op and the whole network, timed with "
        "CUDA events "
        f"(median of >= {r['policy']['num_executions']} executions). Sum of the ops' medians over the "
        "whole network's median:",
        "",
        "| mode | batch | " + " | ".join(r["archs"]) + " | measure s |",
        "|---|---|" + "---|" * len(r["archs"]) + "---|",
    ]
    for s in r["settings"]:
        ratios = " | ".join(f"{n['sum_over_whole']:.3f} ({n['whole_p50_ms']:.3f} ms)" for n in s["networks"])
        out.append(f"| {s['mode']} | {s['batch']} | {ratios} | {s['measure_s']} |")
    e = r.get("energy") or {}
    out += [""]
    if "error" in e:
        out.append(f"NVML energy: not measured ({e['error']}).")
    elif e:
        out.append(
            f"NVML energy of `{e['op_key']}` at batch {e['batch']}: idle {e['idle_power_w']:.1f} W, "
            f"{e['avg_power_w']:.1f} W above idle while replaying, {e['energy_mj']:.4f} mJ per execution "
            f"above idle ({e['executions']} executions over {e['window_s']:.2f} s)."
        )
    return out


def energy_fidelity(r: dict) -> list[str]:
    m = r["model"]
    out = [
        "## Energy predictor on a simulated device (known power model)",
        "",
        "`python -m bench.energy_fidelity` ("
        + ", ".join(f"--{k} {v}" for k, v in r["args"].items() if k != "out" and v)
        + ")",
        "",
        _env(r),
        "",
        "No energy counter exists here, so the device is this machine's runner with a prepared RAPL tree "
        f"whose counter follows a known model: {m['idle_w']:g} W idle plus {m['w_per_cpu_core']:g} W per "
        "CPU-second of the runner (`tests/powersim.py`). Every macro-cifar10 op profiled with the reader, "
        f"`calibrate` on {len(r['calibration']['networks'])} spread networks (latency and energy), then "
        "held-apart networks measured whole in one session: their measured energy per inference above "
        "idle against the raw LUT energy sum, the probe-corrected sum and the calibrated prediction.",
        "",
        "| variant | n | within ±10 % | within ±5 % | MAPE % | mean error % | max abs error % |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, s in r["summaries"].items():
        out.append(
            f"| {label} | {s['n']} | {s['within_10pct']:.0%} | {s['within_5pct']:.0%} | "
            f"{s['mape_pct']:.1f} | {s['mean_error_pct']:+.1f} | {s['max_abs_error_pct']:.1f} |"
        )
    loo = r["calibration"]["loo"]
    if loo:
        out += [
            "",
            f"Energy calibration leave-one-out: mean |error| {loo['mape_pct']:.1f} %, within ±10 % "
            f"{loo['within_10pct']:.0%} (n={loo['n']}). Load average {r['load_avg_start'][0]:.1f} -> "
            f"{r['load_avg_end'][0]:.1f}.",
        ]
    return out


#: what no benchmark here measures, and why (kept when the file is regenerated)
NOT_MEASURED = """## Not measured here: energy, CUDA, batch > 1

This machine has no energy counter (no RAPL under `/sys/class/powercap`, an empty
`/sys/class/power_supply`, no NVML) and no GPU, so no real energy or CUDA figure exists in this file
(the energy predictor's figures above come from a simulated counter). What the tests check instead
(`tests/agent/test_power.py`, `tests/host/test_power_trace.py`, `tests/host/test_energy.py`): the shipped
readers and the above-idle integration recover an injected power model within +/-10% from prepared
sysfs trees (RAPL with counter wrap-around, a 1 Hz fuel gauge with either sign convention), and the
runner and `chamlab profile` carry the energy and the raw trace through to Parquet. The `cuda`
backend's GPU tests (`tests/agent/test_torch_runner.py`, `tests/host/test_cuda_backend.py`, marker
`gpu`) were skipped here: no CUDA device. `bench/gpu_check.py` measures the cuda path on a GPU
machine (a "GPU check" section appears once it has been run there). Batch sizes other than 1 are
supported by `profile`/`predict`/`measure --batch N` but have not been benchmarked (the
latency-fidelity figures above are batch 1). CUDA figures measured elsewhere (an H200, before this
backend existed) are in the project notes, not here.
"""


def piece_alone(title: str) -> Callable[[dict], list[str]]:
    """:func:`fidelity_variants` of a results file that holds one piece run alone (``--only``: its
    header shows the arguments without it, as the main run's would)."""
    return lambda r: fidelity_variants(
        {**r, "args": {k: v for k, v in r["args"].items() if k != "only"}}, title
    )


def main() -> None:
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench.report` from `bench/results/*.json`; re-run `make bench` to refresh. "
        "Timings depend on the machine and on its neighbours (this CI machine is a shared 2-core VM); "
        "ratios measured within one run are the meaningful figures.",
        "",
    ]
    renders = (
        ("latency_fidelity", fidelity),
        (
            "latency_fidelity_repeat",
            piece_alone(
                "Latency fidelity, chamnet-mbv2 at 2 threads repeated (the piece alone, hours later)"
            ),
        ),
        (
            "latency_fidelity_repeat2",
            piece_alone(
                "Latency fidelity, chamnet-mbv2 at 2 threads, a third run (the piece alone, quiet machine)"
            ),
        ),
        (
            "latency_fidelity_recheck_2t",
            piece_alone(
                "Latency fidelity, chamnet-mbv2 at 2 threads with the op recheck (the third run's LUT, "
                "networks measured 2 hours later)"
            ),
        ),
        (
            "latency_fidelity_recheck_1t",
            piece_alone(
                "Latency fidelity, chamnet-mbv2 at 1 thread with the op recheck (the first run's LUT, "
                "networks measured 8 hours later)"
            ),
        ),
        (
            "latency_fidelity_reduced",
            lambda r: fidelity_variants(r, "Latency fidelity, reduced run: every variant vs the noise floor"),
        ),
        (
            "latency_fidelity_protocol",
            lambda r: fidelity_variants(
                r, "Latency fidelity under the noise protocol (reduced run, loaded machine)"
            ),
        ),
        ("energy_fidelity", energy_fidelity),
        (
            "latency_fidelity_int8",
            lambda r: fidelity_variants(r, "int8 latency fidelity: int8 LUT vs whole int8 networks"),
        ),
        ("int8_speedup", int8_speedup),
        ("quant_speed", quant_speed),
        ("profiling_cost", cost),
        ("profiling_cost-chamnet-mbv2", lambda r: cost(r, "Profiling cost: the chamnet-mbv2 reference LUT")),
        (
            "profiling_cost-chamnet-mbv2-sample13",
            lambda r: cost(r, "Profiling cost: a chamnet-mbv2 LUT of the references and 13 random archs"),
        ),
        (
            "profiling_cost_per_op",
            lambda r: cost(r, "Profiling cost before the batch shim (one process per op)"),
        ),
        ("stability", stability),
        ("runtime_import", runtime_import),
        ("toolchain_start", toolchain_start),
        ("lut_merge", lut_merge),
        ("farm_throughput", farm_throughput),
        ("transport_overhead", transport_overhead),
        ("transport_fixed_cost", transport_fixed_cost),
        ("fault_recovery", fault_recovery),
    )
    for name, render in renders:
        r = _load(name)
        parts += (render(r) if r else [f"## {name}", "", "_not run yet_"]) + [""]
    recorded = _load("gpu_check")
    if recorded and not recorded.get("dry_run"):  # only where a GPU run was recorded
        parts += [*gpu_check(recorded), ""]
    from bench.search_efficiency import render as search_render

    r = _load("search_efficiency")
    parts += (search_render(r, _env(r)) if r else ["## Search sample efficiency", "", "_not run yet_"]) + [""]
    parts += [(NOTES / "search_experiments.md").read_text().rstrip("\n"), ""]  # the log, kept by hand
    from bench.search_suite import render as suite_render

    r = _load("search_suite")
    title = "## Search on public tabular benchmarks (the suite)"
    parts += (suite_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.train_seconds import render as train_render

    r = _load("train_seconds")
    parts += (train_render(r, _env(r)) if r else ["## Training oracle cost", "", "_not run yet_"]) + [""]
    from bench.mbv2_real_data import render as mbv2_real_render
    from bench.proxy_fidelity import render as proxy_render

    for name in (
        "proxy_fidelity-macro-cifar10",  # the default proxy
        "proxy_fidelity-macro-cifar10-2000",  # the previous default (2 epochs over 2,000 examples)
        "proxy_fidelity-macro-cifar10-val5000",  # the previous default with 5,000 validation images
        "proxy_fidelity-chamnet-mbv2-default",  # the default proxy
        "proxy_fidelity-chamnet-mbv2-factor8",  # the default proxy against 8 epochs
        "proxy_fidelity-chamnet-mbv2-data4",  # the default proxy against 4x the training examples
        "proxy_fidelity-chamnet-mbv2",  # 256 training images, 2 epochs
    ):
        r = _load(name)
        title = f"## Proxy fidelity: {name.split('-', 1)[1]}"
        parts += (proxy_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    title = "## chamnet-mbv2 on real data: the training oracle's accuracies over the BO's archs"
    for name in ("mbv2_real_data", "mbv2_real_data-256"):  # the default proxy; a 256-image proxy
        r = _load(name)
        parts += (mbv2_real_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.int8_accuracy import render as int8_accuracy_render

    r = _load("int8_accuracy")
    parts += (
        int8_accuracy_render(r, _env(r))
        if r
        else ["## int8 accuracy cost on the training oracle's proxy task", "", "_not run yet_"]
    ) + [""]
    from bench.calibration_features import render as features_render

    r = _load("calibration_features")
    parts += (
        features_render(r, _env(r))
        if r
        else ["## Calibration features: which generalise", "", "_not run yet_"]
    ) + [""]
    from bench.energy_features import render as energy_features_render

    r = _load("energy_features")
    title = "## Energy calibration features: v1 or v2"
    parts += (energy_features_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.calibration_repeats import render as repeats_render

    r = _load("calibration_repeats")
    title = "## Calibration: one session or three per network"
    parts += (repeats_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.calibration_few import render as few_render

    r = _load("calibration_few")
    title = "## Calibration on few networks: every coefficient free, or n - 1"
    parts += (few_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.op_reproducibility import render as op_sessions_render

    r = _load("op_reproducibility")
    title = "## Op timings between sessions, and the calibration's op recheck"
    parts += (op_sessions_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.op_model_features import render as op_columns_render

    r = _load("op_model_features")
    title = "## Op-level model columns: one MAC column vs MACs split by kernel"
    parts += (op_columns_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    from bench.adapt_search_time import render as search_time_render
    from bench.adaptive_profile import render as adaptive_render
    from bench.constraint_fidelity import render as fidelity_render
    from bench.data_to_model import render as data_to_model_render
    from bench.new_device import render as new_device_render
    from bench.threads_adapt import render as threads_render

    for name, render_adapt, title in (
        ("adapt_search_time", search_time_render, "Search time of adapt"),
        ("constraint_fidelity", fidelity_render, "Constraint fidelity of adapt"),
        ("adaptive_profile", adaptive_render, "Adaptive profiling on real chamnet-mbv2 ops"),
        ("new_device", new_device_render, "New device to verified model"),
        ("threads_adapt", threads_render, "Threads searched with the arch: `adapt --threads 1,2`"),
        ("data_to_model", data_to_model_render, "Data to shipped model"),
    ):
        r = _load(name)
        parts += (render_adapt(r, _env(r)) if r else [f"## {title}", "", "_not run yet_"]) + [""]
    from bench.heat_gating import render as heat_render

    r = _load("heat_gating")
    title = "## Heat: temperature-gated measurement on a simulated hot device"
    parts += (heat_render(r, _env(r)) if r else [title, "", "_not run yet_"]) + [""]
    parts.append(NOT_MEASURED)
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
