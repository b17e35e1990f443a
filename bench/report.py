"""Markdown tables and one-line progress summaries from the benchmark's JSON."""
from __future__ import annotations


METHODS = ("autolip", "autolip-power", "seqlip", "seqlip-greedy", "lipsdp", "lower")
BOUND_LABELS = ("exact", "certified", "assumed")


def g(v, digits: int = 4) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def secs(v) -> str:
    if v is None:
        return "—"
    if v >= 0.01:
        return f"{v:.3g} s"
    return f"{v * 1e3:.2g} ms" if v >= 1e-4 else f"{v * 1e6:.2g} µs"


def absent_reason(res: dict, name: str) -> str:
    if res.get("skipped", {}).get(name):
        return res["skipped"][name]
    if name not in res.get("known_methods", []):
        return "not in this lipgraph"
    if name not in ("autolip", "autolip-power") and name not in res.get("wired_passes", []):
        return "pass not wired into analyze() at this commit"
    return "analyze() returned no result for it"


def method_reason(res: dict, name: str) -> str | None:
    """Why a method that ran has no finite value (from the diagnostics)."""
    m = res["methods"][name]
    if m["value"] is not None:
        return None
    errs = [d for d in res.get("diagnostics", []) if d["severity"] == "error"]
    if errs:
        codes = sorted({f"{d['code']} at {d['node']}" for d in errs})
        return "not certified: " + "; ".join(codes[:3]) + (" …" if len(codes) > 3 else "")
    return m.get("detail", {}).get("reason") or "no finite value"


def best_upper(res: dict):
    vals = [(m["value"], name) for name, m in res.get("methods", {}).items()
            if m["label"] in BOUND_LABELS and m["value"] is not None and name != "lower"]
    return min(vals, default=None)


def lower_value(res: dict):
    """The realised lower bound: analyze()'s ``lower`` method, else the bench's own search_lower run."""
    m = res.get("methods", {}).get("lower")
    if m and m["value"] is not None:
        return m["value"]
    return (res.get("bench_lower") or {}).get("value")


def gap(res: dict):
    up, lo = best_upper(res), lower_value(res)
    if up is None or not lo:
        return None
    return up[0] / lo


def cell(res: dict, name: str) -> str:
    if not res.get("ok"):
        return f"n/a ({res.get('error', 'failed')})"
    m = res["methods"].get(name)
    if m is None and name == "lower" and res.get("bench_lower"):
        b = res["bench_lower"]
        return f"n/a in analyze() ({absent_reason(res, name)}); bench search_lower: {g(b['value'])}†"
    if m is None:
        return f"n/a ({absent_reason(res, name)})"
    if m["value"] is None:
        return f"∞ ({method_reason(res, name)})"
    return f"{g(m['value'])} ({m['label']})"


def time_cell(res: dict, name: str) -> str:
    if not res.get("ok"):
        return "n/a"
    m = res["methods"].get(name)
    if m is None and name == "lower" and res.get("bench_lower"):
        b = res["bench_lower"]
        return f"† {secs(b['seconds'])} (×{g(b['seconds'] / res['forward_s'], 3)})"
    if m is None:
        return "n/a"
    return f"{secs(m['seconds'])} (×{g(m['seconds'] / res['forward_s'], 3)})"


def guard_cell(r: dict) -> str:
    guard = r.get("guard") or {}
    if guard.get("status") != "passed":
        return guard.get("status", "n/a")
    return f"{secs(guard['seconds'])} ({100 * guard['seconds'] / r['analysis_s']:.0f} %)"


def peak_at(r: dict) -> str:
    """' (the phase at the peak)', or '' where the worker could not tell."""
    return f" ({r['peak_at']})" if r.get("peak_at") else ""


def one_line(res: dict) -> str:
    if not res.get("ok"):
        return f"FAILED: {res.get('error')}"
    parts = [f"{n}={g(m['value']) if m['value'] is not None else '∞'}" for n, m in res["methods"].items()]
    gp = gap(res)
    return (", ".join(parts) + f"; gap {g(gp, 3) if gp else 'n/a'}; analyze {res['analysis_s']:.1f} s, "
            f"forward {secs(res['forward_s'])}, peak +{res['peak_mb']:.0f} MiB")


def markdown(p: dict) -> str:
    meta, nets = p["meta"], p["networks"]
    L = []
    L.append(f"# lipgraph benchmark ({'quick' if meta['quick'] else 'full'} run)\n")
    L.append(f"{meta['date']}; device `{meta['device']}`; {meta['cpus']} CPUs, load average "
             f"{meta['load_average_end']:.1f} at the end (the machine is shared: absolute seconds are noisy, "
             f"ratios taken in the same run are what to compare); torch {meta['torch']}; total "
             f"{meta['total_s']:.0f} s. Budgets: lower-bound search {meta['lower_budget_s']:g} s inside "
             f"`analyze()`, SeqLip exact enumeration {meta['seqlip_budget_s']:g} s, section (b) search "
             f"{', '.join(f'{b:g}' for b in meta['trace_budgets_s'])} s. Regenerate: `make bench{' QUICK=1' if meta['quick'] else ''}`.\n")
    if p.get("soundness_violations"):
        L.append("**SOUNDNESS FAILURE** — a certified upper bound is below a realised lower bound:\n")
        L += [f"- {b}" for b in p["soundness_violations"]] + [""]
    else:
        L.append("Soundness check passed: every certified/exact value ≥ every realised lower bound on the same network.\n")

    L.append("## Bounds\n")
    L.append("Value (label). *best upper* = smallest certified/exact value; *gap* = best upper / lower "
             "(1 = the constant is known exactly). `estimate` values are not bounds. † = `analyze()` has no "
             "`lower` pass at this commit, so the bench ran `lipgraph.lower.search.search_lower` itself on the "
             "float64 model (default search, seed 0, same budget) and the gap uses that value.\n")
    L.append("| network | what | " + " | ".join(METHODS) + " | best upper | gap |")
    L.append("|---" * (len(METHODS) + 4) + "|")
    for r in nets:
        up = best_upper(r) if r.get("ok") else None
        gp = gap(r) if r.get("ok") else None
        up_s = f"{g(up[0])} ({up[1]})" if up else ("n/a (not certified)" if r.get("ok") else "n/a")
        gp_s = g(gp, 3) if gp else ("n/a (no finite upper bound)" if r.get("ok") and not up else "n/a")
        L.append(f"| {r['name']} | {r.get('describe', '')} | " + " | ".join(cell(r, m) for m in METHODS)
                 + f" | {up_s} | {gp_s} |")
    L.append("")

    L.append("## Time and memory\n")
    L.append("Seconds per method and, in brackets, as a multiple of one onnxruntime forward pass (batch 1, "
             "median). `autolip` and `autolip-power` share one pass over the graph (the same seconds); so do "
             "`seqlip` and `seqlip-greedy`. *analyze* is the whole `analyze()` call. Peak memory: increase "
             "of resident memory during `analyze()`, measured as VmHWM − RSS-before after resetting the "
             "high-water mark through `/proc/self/clear_refs` (native torch/numpy allocations included), and "
             "in brackets the phase of `analyze()` (its progress message) in which it peaked. "
             "*onnxruntime check*: the differential guard (part of *analyze*), with its share of it.\n")
    L.append("| network | forward | " + " | ".join(METHODS) + " | analyze | onnxruntime check | peak memory |")
    L.append("|---" * (len(METHODS) + 5) + "|")
    for r in nets:
        if not r.get("ok"):
            L.append(f"| {r['name']} | n/a | " + " | ".join("n/a" for _ in METHODS) + f" | n/a ({r.get('error')}) | n/a | n/a |")
            continue
        L.append(f"| {r['name']} | {secs(r['forward_s'])} | " + " | ".join(time_cell(r, m) for m in METHODS)
                 + f" | {secs(r['analysis_s'])} (×{g(r['analysis_s'] / r['forward_s'], 3)}) | "
                 f"{guard_cell(r)} | +{r['peak_mb']:.0f} MiB{peak_at(r)} |")
    L.append("")

    notc = [r for r in nets if r.get("ok") and not best_upper(r)]
    if notc:
        L.append("## Not certified: how it is reported\n")
        for r in notc:
            L.append(f"**{r['name']}** — no finite certified upper bound; `lipgraph analyze` exits 1. "
                     "Diagnostics (errors):\n")
            for d in r["diagnostics"]:
                if d["severity"] == "error":
                    L.append(f"- `{d['node']}` [{d['code']}] {d['message']}")
            lo = lower_value(r)
            if lo:
                L.append(f"\nThe realised lower bound is still reported: {g(lo)}.")
            L.append("")

    L += section_a(p) + section_b(nets) + section_c(nets) + section_e(p.get("box") or []) + \
        section_f(p.get("lipsdp") or [], meta) + section_g(nets) + notes(nets)
    return "\n".join(L) + "\n"


def section_a(p: dict) -> list[str]:
    L = ["## (a) SeqLip: exact factor time, and the gain over AutoLip\n",
         "`lipgraph.certify.seqlip_chain.time_exact_factor(n, seed=0)`: one exact SeqLip factor of width n "
         "(random Gaussian n → n → n chain, ReLU box, all 2ⁿ activation patterns). The reference code "
         "(Virmaux & Scaman) needs about 140 s at n = 20.\n",
         "| n | seconds | vs reference 140 s | factor value |", "|---|---|---|---|"]
    for row in p["exact_factor"]:
        if row.get("seconds") is None:
            L.append(f"| {row['n']} | n/a ({row.get('error')}) | — | — |")
        else:
            L.append(f"| {row['n']} | {row['seconds']:.3g} | {140 / row['seconds']:.3g}× faster "
                     f"{'(n = 24 is 16× the vertices)' if row['n'] == 24 else ''} | {g(row['value'], 6)} |")
    L.append("")
    L += ["Past enumeration: `lipgraph.certify.seqlip_bnb.factor_bnb_lagrangian` (branch and bound, "
          "Lagrangian node bound; stops at 60 s with its anytime certified bound).\n",
          "| case | n | seconds | nodes | exact? | certified value | best vertex | gap |", "|---|---|---|---|---|---|---|---|"]
    for row in p.get("bnb_factor", []):
        if row.get("seconds") is None:
            L.append(f"| {row['case']} | — | n/a ({row.get('error')}) | — | — | — | — | — |")
        else:
            L.append(f"| {row['case']} | {row['n']} | {row['seconds']:.3g} | {row['nodes']} | "
                     f"{'yes' if row['done'] else 'no'} | {g(row['value'], 9)} | {g(row['lower'], 9)} | {row['gap']:.1e} |")
    L.append("")
    rows = [r for r in p["networks"] if r.get("ok") and r.get("family") in ("paper MLP", "anchor", "ECLipsE random",
                                                                            "digits-trained")]
    L.append("AutoLip / SeqLip on chains (paper-shaped MLPs and the other MLPs/CNNs; > 1 means SeqLip is tighter; "
             "the paper reports ≈ 1.5–8 with greedy SeqLip on trained MLPs):\n")
    L.append("| network | autolip | seqlip (certified) | autolip / seqlip | seqlip-greedy (estimate) | autolip / greedy |")
    L.append("|---|---|---|---|---|---|")
    for r in rows:
        a = r["methods"].get("autolip", {}).get("value")
        s = r["methods"].get("seqlip", {}).get("value") if "seqlip" in r["methods"] else None
        gr = r["methods"].get("seqlip-greedy", {}).get("value") if "seqlip-greedy" in r["methods"] else None
        L.append(f"| {r['name']} | {g(a)} | {g(s) if s else cell(r, 'seqlip')} | {g(a / s, 3) if a and s else 'n/a'} | "
                 f"{g(gr) if gr else cell(r, 'seqlip-greedy')} | {g(a / gr, 3) if a and gr else 'n/a'} |")
    L.append("")
    return L


def section_b(nets: list[dict]) -> list[str]:
    rows = [r for r in nets if r.get("ok") and r.get("trace")]
    if not rows:
        return ["## (b) Lower bound against search time\n", "n/a (no network ran the timed search)\n"]
    marks = sorted({m for r in rows for m in r["trace"]}, key=float)
    L = ["## (b) Lower bound against search time\n",
         "`search_lower` (default search: smoothed-surrogate ascent alternating with annealing, seed 0) on the "
         "float64 model, one run per budget. A round always finishes, so the seconds actually spent (in "
         "brackets) can exceed the budget on this loaded machine. Gap = best certified upper bound / that "
         "lower bound.\n",
         "| network | best upper | " + " | ".join(f"lower, {m} s budget | gap" for m in marks) + " |",
         "|---" * (2 * len(marks) + 2) + "|"]
    for r in rows:
        up = best_upper(r)
        cells = []
        for m in marks:
            run = r["trace"].get(m)
            v = run["value"] if run else None
            cells.append(f"{g(v)} ({run['seconds']:.1f} s, {run['rounds']} rounds)" if run else "—")
            cells.append(g(up[0] / v, 3) if (v and up) else "n/a")
        L.append(f"| {r['name']} | {g(up[0]) + ' (' + up[1] + ')' if up else 'n/a'} | " + " | ".join(cells) + " |")
    L.append("")
    return L


def section_c(nets: list[dict]) -> list[str]:
    rows = [r for r in nets if r.get("convs")]
    L = ["## (c) ResNet-18 shape at 224×224\n"]
    for r in rows:
        if not r.get("ok"):
            L.append(f"`analyze()`: n/a ({r.get('error')}); onnxruntime forward pass: "
                     f"{secs(r.get('forward_s')) if r.get('forward_s') else 'n/a'}.\n")
    if not rows:
        missing = [r for r in nets if r["name"] == "resnet18"]
        why = missing[0].get("error") if missing else "not in this run (full run only)"
        return L + [f"n/a ({why})\n"] + section_c_analyze(nets)
    for r in rows:
        c = r["convs"]
        if c.get("error"):
            L.append(f"Convolution table: {c['error']}.\n")
        if r.get("ok"):
            L.append(f"`analyze()` took {secs(r['analysis_s'])}, {g(r['analysis_s'] / r['forward_s'], 3)}× one "
                     f"onnxruntime forward pass ({secs(r['forward_s'])}).\n")
        ratio = c["certified_s"] / c["power_s"] if c["power_s"] else None
        L.append(f"Certified norms of {'all' if c.get('complete') else 'the first'} {len(c['rows'])} convolutions with `lipgraph.certify.conv.conv_certified_norm` "
                 f"(steered by the power-iteration estimate): {c['certified_s']:.3g} s in total; the power-iteration "
                 f"estimates themselves: {c['power_s']:.3g} s; ratio certified / power = {g(ratio, 3)}. "
                 f"(Measured one convolution at a time, outside `analyze()`, which norms Conv→BatchNorm as one "
                 f"folded segment.)\n")
        L.append(f"Certificate vs power iteration, per convolution: {conv_tightness(c['rows'], 'certified', 'power')}.\n")
        L.append("| conv | weight | input | power σ (estimate) | iters | power s | certified | route | certified s | certified / power − 1 |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for x in c["rows"]:
            rel = x["certified"] / x["power"] - 1 if x["power"] else None
            L.append(f"| {x['node']} | {'×'.join(map(str, x['weight']))} | {'×'.join(map(str, x['input'][1:]))} | "
                     f"{g(x['power'], 6)} | {x['power_iters']} | {x['power_s']:.2f} | {g(x['certified'], 6)} | "
                     f"{x['route']} | {x['certified_s']:.2f} | {rel:.2e} |" if rel is not None else "")
        L.append("")
    return L + section_c_analyze(nets)


#: How tight each convolution's certificate must be against its power-iteration estimate.
CONV_TIGHT = 1e-3


def conv_tightness(rows: list[dict], cert: str, est: str) -> str:
    """'M of N within 0.1 %' of rows with a certificate and an estimate, and the worst excess."""
    pairs = [(x, x[cert] / x[est] - 1) for x in rows if x.get(cert) and x.get(est)]
    if not pairs:
        return "no convolution with both a certificate and an estimate"
    ok = sum(1 for _, rel in pairs if rel <= CONV_TIGHT)
    worst, rel = max(pairs, key=lambda p: p[1])
    return (f"{ok} of {len(pairs)} within {100 * CONV_TIGHT:g} % of the estimate"
            f"{' (goal met)' if ok == len(pairs) else ' (goal missed)'}; worst +{100 * rel:.3g} % at "
            f"`{worst.get('node', worst.get('id'))}`")


def section_c_analyze(nets: list[dict]) -> list[str]:
    """Inside ``analyze()``: each convolution segment's certificate against its own estimate."""
    rows = [r for r in nets if r.get("ok") and r.get("conv_segments")]
    if not rows:
        return []
    L = ["Inside `analyze()` (segments Conv→BatchNorm folded, certificate first, the estimate stopping once it "
         f"agrees to {100 * CONV_TIGHT:g} %): every convolution segment's certified norm against its power-iteration "
         "estimate (the best estimate available; an estimate is ≤ the true norm, so the excess bounds the "
         "certificate's looseness).\n",
         "| network | convolution segments | certificate vs estimate | routes |", "|---|---|---|---|"]
    for r in rows:
        segs = r["conv_segments"]
        routes = sorted({x["method"] for x in segs})
        L.append(f"| {r['name']} | {len(segs)} | {conv_tightness(segs, 'certified', 'estimate')} | {', '.join(routes)} |")
    L.append("")
    return L


PAPER_RATIO = {"alexnet": "≈ 6.6 (trained AlexNet)", "mnist-cnn": "3–8 (trained MNIST CNNs)"}


def _topk_maps(r: dict) -> str:
    """Per chain, per operator map: top-k (k), skipped or dense, from the SeqLip diagnostics."""
    chains: dict[str, list[str]] = {}
    for d in r.get("diagnostics", []):
        m = d["message"]
        if d["code"] != "seqlip-factor" or ": map " not in m:
            continue
        chain, rest = m.split(": map ", 1)
        rest = rest.split(":", 1)[1]
        cell = "skipped" if "top-k skipped" in rest else "dense" if "materialised" in rest else \
            "top-" + rest.split("top-", 1)[1].split(" ", 1)[0] if "triplets" in rest else "?"
        chains.setdefault(chain, []).append(cell)
    return "; ".join(f"chain {i}: {', '.join(c)}" for i, c in enumerate(chains.values(), 1)) or "—"


def section_g(nets: list[dict]) -> list[str]:
    rows = [r for r in nets if r.get("ok") and any("operator" in c["maps"] for c in r.get("chain_detail") or [])]
    L = ["## (g) top-k SeqLip on large chains\n"]
    if not rows:
        return L + ["n/a (no network with a chain of operator maps in this run; alexnet and mnist-cnn are in the full run)\n"]
    L.append("The paper's heuristic for layers too large for an SVD: k leading singular triplets per map by "
             "randomised block power iteration (float32 on the analysis device, k reduced to fit a fixed "
             "multiply-add count, skipped only below k = 16), then greedy / alternating ascent in k dimensions. "
             "`seqlip-greedy` is an **estimate** (it can fall below the true constant); the certified `seqlip` "
             "of a factor with an operator map is its AutoLip factor. *autolip / greedy* is the paper's ratio.\n")
    L.append("| network | chains | maps (top-k per operator map) | autolip | seqlip-greedy (estimate) | autolip / greedy "
             "| paper | seqlip (certified) | SeqLip seconds |")
    L.append("|---" * 9 + "|")
    for r in rows:
        a = r["methods"].get("autolip", {}).get("value")
        gr = (r["methods"].get("seqlip-greedy") or {}).get("value")
        sq = (r["methods"].get("seqlip") or {}).get("value")
        secs_ = (r["methods"].get("seqlip") or {}).get("seconds")
        L.append(f"| {r['name']} | {len(r['chain_detail'])} | {_topk_maps(r)} | {g(a)} | {g(gr)} | "
                 f"{g(a / gr, 3) if a and gr else 'n/a'} | {PAPER_RATIO.get(r['name'], '—')} | {g(sq)} | {secs(secs_)} |")
    L.append("")
    return L


def _box_best(part: dict):
    vals = [m["value"] for m in part["methods"].values() if m["label"] in ("exact", "certified", "assumed")
            and m["value"] is not None]
    return min(vals) if vals else None


def box_line(r: dict) -> str:
    if not r.get("ok"):
        return f"FAILED: {r.get('error')}"
    gl, bx = r["global"], r["box"]
    up_g, up_b = _box_best(gl), _box_best(bx)
    return (f"best upper {g(up_g)} on R^n, {g(up_b)} on [0, 1] (lower {g(bx['lower'])}); analyze "
            f"{gl['analysis_s']:.2f} s vs {bx['analysis_s']:.2f} s, box pass {secs(bx['box_s'])}")


def section_e(rows: list[dict]) -> list[str]:
    L = ["## (e) Bounds on the input box [0, 1]\n"]
    if not rows:
        return L + ["n/a (not in this run)\n"]
    L.append("Each network analysed twice in one worker with `autolip,seqlip,lower` (same budgets): on R^n and "
             "with `--input-box 0,1`. *box pass*: the value ranges of every tensor; *× global*: the box "
             "analysis time over the global one (the local node bounds, the per-neuron SeqLip and the "
             "lower search in the box are inside it). *gap on box* = best certified upper on the box / "
             "the lower bound realised in the box; ∞ = no finite certified bound.\n")
    L.append("| network | global s | box s (× global) | box pass s | autolip R^n → box | seqlip R^n → box "
             "| best upper R^n → box | lower on box | gap on box |")
    L.append("|---" * 9 + "|")
    for r in rows:
        if not r.get("ok"):
            L.append(f"| {r['name']} | n/a ({r.get('error')}) |" + " n/a |" * 7)
            continue
        gl, bx = r["global"], r["box"]

        def pair(name):
            a, b = gl["methods"].get(name), bx["methods"].get(name)
            return f"{g(a['value']) if a and a['value'] is not None else '∞'} → " \
                   f"{g(b['value']) if b and b['value'] is not None else '∞'}"

        up_g, up_b = _box_best(gl), _box_best(bx)
        low = bx["lower"]
        L.append(f"| {r['name']} | {gl['analysis_s']:.2f} | {bx['analysis_s']:.2f} (×{bx['analysis_s'] / gl['analysis_s']:.2f}) "
                 f"| {secs(bx['box_s'])} | {pair('autolip')} | {pair('seqlip')} | {g(up_g) if up_g else '∞'} → "
                 f"{g(up_b) if up_b else '∞'} | {g(low)} | {g(up_b / low, 3) if up_b and low else '∞'} |")
    L.append("")
    return L


ROUTE_NAMES = {"layer/first-order": "Layer, first-order", "neuron/first-order": "Neuron, first-order",
               "layer/sdp": "Layer, SDP", "neuron/sdp": "Neuron, SDP"}


def _route_value(c: dict | None, digits: int = 6) -> str:
    """A section (f) cell's value: the number (with its label unless certified), or why there is none."""
    if not c:
        return "—"
    if c.get("skipped"):
        return c["skipped"]
    if c.get("value") is None:
        return "∞ (" + "; ".join(c.get("notes") or ["no value"]) + ")"
    return g(c["value"], digits) + ("" if c.get("label") == "certified" else f" ({c.get('label')})")


def _route_cell(c: dict | None) -> str:
    return _route_value(c) + (f" · {secs(c['seconds'])}" if c and not c.get("skipped") and c.get("seconds") is not None
                              else "")


def _route_secs(c: dict | None) -> str:
    if not c or c.get("skipped"):
        return (c or {}).get("skipped", "—")
    return secs(c["seconds"]) + ("" if c.get("label") == "certified" else f" ({c.get('label')})")


def lipsdp_best(r: dict):
    """Smallest certified value among the routes and ECLipsE-Fast (section (f))."""
    cells = [*r.get("routes", {}).values(), r.get("eclipse_fast") or {}]
    return min((c["value"] for c in cells if c.get("label") in BOUND_LABELS and c.get("value") is not None),
               default=None)


def lipsdp_line(r: dict) -> str:
    if not r.get("ok"):
        return f"{r['name']}: FAILED: {r.get('error')}"
    return (f"{r['name']}: {r['neurons']} neurons; eclipse-fast {_route_cell(r.get('eclipse_fast'))}; " +
            "; ".join(f"{k} {_route_cell(c)}" for k, c in r["routes"].items()))


def route_comparison(rows: list[dict]) -> list[str]:
    """One sentence: the SDP route against the first-order one, where both gave certified values."""
    pairs = []
    for r in rows:
        for variant in ("layer", "neuron"):
            fo, sdp = (r.get("routes", {}).get(f"{variant}/{x}") or {} for x in ("first-order", "sdp"))
            if fo.get("label") == sdp.get("label") == "certified":
                pairs.append(((fo["value"] - sdp["value"]) / sdp["value"], sdp["seconds"] / fo["seconds"]))
    if not pairs:
        return []
    gains, ratios = [p[0] for p in pairs], [p[1] for p in pairs]
    return [f"Where both routes ran ({len(pairs)} network × variant pairs), first-order minus SDP value, relative: "
            f"{min(gains):+.1e} to {max(gains):+.1e} (positive: the SDP route is tighter); the SDP route took "
            f"{min(ratios):.3g}–{max(ratios):.3g}× the first-order route's seconds.\n"]


def section_f(rows: list[dict], meta: dict) -> list[str]:
    L = ["## (f) LipSDP routes\n"]
    if not rows:
        return L + ["n/a (not in this run)\n"]
    L.append("`lipgraph.certify.lipsdp` on the one chain `analyze()` finds in each network (here the whole network), "
             "in one worker (`bench/lipsdp.py`): ECLipsE-Fast's closed-form multipliers, LipSDP-Layer and "
             "LipSDP-Neuron by the first-order route (L-BFGS on the closed-form ρ(Λ), float64 torch, one thread) and "
             "by cvxpy + Clarabel (the dense SDP; only up to an SDP matrix of "
             f"{meta.get('sdp_limit')} = input + hidden neurons, as Clarabel's time grows steeply with it; "
             f"cvxpy {'installed' if meta.get('cvxpy') else 'not installed: `pip install lipgraph[sdp]`'}). "
             "Every value is proven after solving (block LDLᵀ in float64 with rounding margins) and is certified "
             "unless marked; seconds include the proof. autolip, seqlip (certified) and lower (realised, "
             f"{meta['lower_budget_s']:g} s search) come from the same worker's `analyze()`. *best / lower* = the "
             "smallest certified LipSDP or ECLipsE-Fast value over the lower bound. First-order iterations "
             f"(`max_iter` Layer, Neuron) per network in the last column; each route stops at {meta.get('route_limit_s', 0):g} s.\n")
    goals = [r for r in rows if r.get("goal")]
    for r in goals:
        c = (r.get("routes") or {}).get("neuron/first-order") or {}
        if r.get("ok") and c.get("value") is not None and not c.get("skipped"):
            wall, cpu = c["seconds"], c.get("cpu_seconds", c["seconds"])
            met = "**met**" if wall < r["goal"] else \
                "**met in CPU time**, not in wall time on this loaded machine" if cpu < r["goal"] else "**not met**"
            L.append(f"- Speed goal, {r['describe']}: LipSDP-Neuron first-order {secs(wall)} wall, {secs(cpu)} CPU "
                     f"(value {_route_value(c)}; goal < {r['goal']:g} s: {met}; {r['others']}).")
        else:
            L.append(f"- Speed goal, {r['describe']} (< {r['goal']:g} s): not measured "
                     f"({r.get('error') or _route_value(c)}).")
    if goals:
        L.append(f"\nThe goals are the issue's, for this CPU. Seconds in this section are wall time on a shared machine "
                 f"(load average {meta['load_average_end']:.1f} on {meta['cpus']} CPUs at the end of the run); the "
                 "routes run on one thread, so their CPU time is close to what they take on an idle machine.\n")
    bounds = [r for r in rows if not r.get("series")]
    L.append("| network | hidden neurons | autolip | seqlip | lower | ECLipsE-Fast | " +
             " | ".join(ROUTE_NAMES.values()) + " | best / lower | iterations |")
    L.append("|---" * 12 + "|")
    for r in bounds:
        if not r.get("ok"):
            L.append(f"| {r['describe']} | n/a ({r.get('error')}) |" + " |" * 10)
            continue
        best = lipsdp_best(r)
        ratio = (f"{best / r['lower']:.4f}" if best / r["lower"] < 100 else g(best / r["lower"], 3)) \
            if best and r.get("lower") else "n/a"
        L.append(f"| {r['describe']} | {r['neurons']} | {cell(r, 'autolip')} | {cell(r, 'seqlip')} | "
                 f"{g(r['lower'], 6)} | {_route_cell(r.get('eclipse_fast'))} | "
                 + " | ".join(_route_cell(r["routes"].get(k)) for k in ROUTE_NAMES)
                 + f" | {ratio} | {r['iters'][0]}, {r['iters'][1]} |")
    L.append("")
    L += route_comparison(rows)
    L += ["How the cost grows with the number of hidden neurons (seconds; every network of this section, the "
          "`32-n-10` rows only for this table):\n",
          "| network | hidden layers | hidden neurons | SDP size | ECLipsE-Fast | " + " | ".join(ROUTE_NAMES.values()) + " |",
          "|---" * 9 + "|"]
    for r in sorted((r for r in rows if r.get("ok")), key=lambda r: (r["neurons"], r["hidden_layers"])):
        L.append(f"| {r['describe']} | {r['hidden_layers']} | {r['neurons']} | {r['sdp_size']} | "
                 f"{_route_secs(r.get('eclipse_fast'))} | " + " | ".join(_route_secs(r['routes'].get(k)) for k in ROUTE_NAMES) + " |")
    L.append("")
    return L


def notes(nets: list[dict]) -> list[str]:
    L = ["## Networks\n", "| network | family | notes |", "|---|---|---|"]
    for r in nets:
        L.append(f"| {r['name']} | {r.get('family', '')} | {r.get('describe', '')}; "
                 + ", ".join(f"{k}: {v}" for k, v in (r.get("notes") or {}).items()) + " |")
    L.append("")
    return L
