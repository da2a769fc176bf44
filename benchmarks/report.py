"""Tables (terminal text and Markdown) and a PNG chart from a benchmark result document.

The document is what `benchmarks.run` writes as JSON, so a saved run can be re-rendered:
`python -m benchmarks.report results.json [--markdown PATH] [--plot PATH]`.
"""
import argparse
import json
import sys

from fastconv._files import atomic_write
from fastconv._sysinfo import describe_vectors
from fastconv.nn.plots import require_matplotlib

FASTCONV_PEERS = ("direct", "im2col", "winograd2", "winograd4", "auto", "fastconv")
SECTIONS = (("conv", "Convolution layers"), ("pool", "Pooling"), ("step", "Training step"))


# ---------------------------------------------------------------- formatting helpers
def _ms(v):
    if v is None:
        return "-"
    decimals = 3 if v < 1 else 2 if v < 10 else 1 if v < 1000 else 0
    return f"{v:.{decimals}f}"


def _ratio(v):
    return "-" if v is None else f"{v:.2f}x" if v < 100 else f"{v:.0f}x"


def _num(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def _err(v):
    return "-" if v is None else f"{v:.1e}"


def _cell_status(rec):
    if rec["status"] == "ok":
        return ""
    if rec["status"] == "wrong":
        return "!!! " + rec["note"]
    if rec["status"] == "error":
        return "ERROR " + (rec["note"] or "")
    return rec["note"] or "n/a"


def _peer_label(rec):
    algo = rec.get("algorithm")
    return f"auto->{algo}" if rec["peer"] == "auto" and algo else rec["peer"]


def progress_line(cell):
    """One line per cell for stderr: each peer's median or why it has none."""
    parts = []
    for rec in cell:
        if rec["status"] in ("ok", "wrong"):
            flag = " !!! WRONG" if rec["status"] == "wrong" else ""
            parts.append(f"{_peer_label(rec)} {_ms(rec['median_ms'])} ms{flag}")
        else:
            parts.append(f"{rec['peer']} {rec['status']}")
    return " | ".join(parts)


def _grid(headers, rows, markdown=False, right=()):
    """Aligned plain-text table, or a Markdown table."""
    if markdown:
        lines = ["| " + " | ".join(headers) + " |",
                 "|" + "|".join("---:" if i in right else "---" for i in range(len(headers))) + "|"]
        lines += ["| " + " | ".join(str(c).replace("|", "/") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def fmt(row):
        return "  ".join(str(c).rjust(w) if i in right else str(c).ljust(w)
                         for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


# ---------------------------------------------------------------- tables
def header_lines(doc):
    m, s, g = doc["machine"], doc["settings"], doc["sgemm"]
    built = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in m["kernels_built"].items())
    compiled = m.get("isa_compiled_for")  # absent from runs before it was recorded
    vectors = f", vectors: {describe_vectors(m.get('isa'), compiled)}" if compiled else ""
    lines = [
        f"fastconv benchmarks ({doc['created']}, fastconv {m['fastconv']}"
        f"{' @ ' + m['fastconv_commit'] if m.get('fastconv_commit') else ''})",
        f"CPU: {m['cpu']}, {m['cores']} usable cores; {s['threads']} thread(s) for every peer "
        f"(OpenMP {'on' if m['openmp'] else 'OFF'}); data: {s.get('dtype', 'float32')}",
        f"fastconv ISA target: {m.get('isa', '?')}{vectors} (runnable here: "
        f"{', '.join(m.get('isa_runnable', [])) or '?'}; CPU features "
        f"{' '.join(m.get('cpu_features', [])) or '?'})",
        f"numpy {m['numpy']}, scipy {m['scipy']}, torch {m['torch'] or 'not installed'}, "
        f"python {m['python']}",
        "BLAS: " + ("; ".join(m["blas"]) or "none found"),
        f"kernels built: {built}; environment: "
        + (", ".join(f"{k}={v}" for k, v in m.get("environment", {}).items()) or "no threading variables set"),
        f"SGEMM ({g['n']}^3 float32 through NumPy's BLAS, best of 5): {g['gflops']:.1f} GFLOP/s",
        f"load average (1, 5, 15 min) at start {m.get('load_average_start')}, "
        f"at end {m.get('load_average_end')}; run took {doc.get('elapsed_s')} s",
        f"timing: 1 warm-up, then interleaved rounds; {s['min_reps']}..{s['repeat']} measured "
        f"repetitions per peer (as many as fit {s['budget_s']} s); ms = median, spread = [min, max]",
        f"calls under {s.get('prime_below_s', 0) * 1e3:g} ms are primed by one untimed call before each "
        f"timed one; OpenBLAS idle-thread spin shortened (OPENBLAS_THREAD_TIMEOUT): "
        f"{'yes' if s.get('openblas_spin_limited') else 'no'}",
        "speedup: 'vs torch' = torch median / this median, 'vs ref' = reference median / this "
        "median; above 1 = this peer is faster",
        "GFLOP/s: direct-conv FLOPs 2*N*K*C*R*S*Ho*Wo / median for every pass (Winograd: effective); "
        "%SGEMM = GFLOP/s / SGEMM GFLOP/s",
        "rel err: max |peer - reference| / max |reference|; a WRONG answer gets no speedup",
    ]
    loads = [v for key in ("load_average_start", "load_average_end") for v in (m.get(key) or [])[:1]]
    if loads and max(loads) > m["cores"]:
        lines.append(f"!!! the machine was shared: 1-minute load average up to {max(loads)} on "
                     f"{m['cores']} cores, so threads waited for CPUs and timings are noisy")
    if m.get("kernels_stale"):
        lines.append(f"!!! compiled kernels older than their sources: {', '.join(m['kernels_stale'])}")
    if s.get("interrupted"):
        lines.append("!!! interrupted: only the cells finished before Ctrl-C are reported")
    return lines


def _detail_rows(recs, kind):
    rows, last = [], None
    for r in recs:
        key = (r["case"], r["pass"])
        case, pass_ = key if key != last else ("", "")
        last = key
        timed = r["median_ms"] is not None
        rate = r["gflops"] if kind != "pool" else r["gbps"]
        row = [case, pass_, _peer_label(r),
               _ms(r["median_ms"]),
               f"[{_ms(r['min_ms'])}, {_ms(r['max_ms'])}]" if timed else "",
               _num(rate), _num(r["pct_sgemm"], "{:.0f}%") if kind == "conv" else None,
               _ratio(r["ratio_torch"]), _ratio(r["ratio_reference"]),
               _err(r["max_rel_error"]), _cell_status(r)]
        rows.append([c for c in row if c is not None])
    return rows


def _detail_headers(kind):
    rate = "GB/s" if kind == "pool" else "GFLOP/s"
    headers = ["case", "pass", "peer", "ms", "[min, max]", rate, "%SGEMM",
               "vs torch", "vs ref", "rel err", "note"]
    if kind != "conv":
        headers.remove("%SGEMM")
    return headers


def summary(doc):
    """Per cell: fastconv "auto", the best fastconv peer, torch and the reference."""
    cells = {}
    for r in doc["results"]:
        cells.setdefault((r["kind"], r["case"], r["pass"]), {})[r["peer"]] = r
    out = []
    for (kind, case, pass_), by_peer in cells.items():
        ok = [r for p, r in by_peer.items() if p in FASTCONV_PEERS and r["status"] == "ok"]
        best = min(ok, key=lambda r: r["median_ms"]) if ok else None
        default = by_peer.get("auto") or by_peer.get("fastconv")
        out.append({"kind": kind, "case": case, "pass": pass_, "best": best,
                    "default": default if default and default["status"] == "ok" else None,
                    "torch": by_peer.get("torch"), "reference": by_peer.get("reference"),
                    "wrong": [r["peer"] for r in by_peer.values() if r["status"] in ("wrong", "error")]})
    return out


def _summary_rows(doc):
    rows = []
    for s in summary(doc):
        best, default, torch, ref = s["best"], s["default"], s["torch"], s["reference"]
        rows.append([
            s["case"], s["pass"],
            f"{_ms(default['median_ms'])} ({_peer_label(default)})" if default else "-",
            f"{_ms(best['median_ms'])} ({_peer_label(best)})" if best else "-",
            _ms(torch["median_ms"]) if torch and torch["status"] == "ok" else (torch or {}).get("status", "-"),
            _ratio(best["ratio_torch"]) if best else "-",
            _ms(ref["median_ms"]) if ref and ref["status"] == "ok" else "-",
            _ratio(best["ratio_reference"]) if best else "-",
            ("!!! " + ", ".join(s["wrong"])) if s["wrong"] else "",
        ])
    return rows


SUMMARY_HEADERS = ["case", "pass", "fastconv default ms", "best fastconv ms", "torch ms",
                   "best vs torch", "reference ms", "best vs ref", "wrong/error"]


def furthest_behind(doc, count=3):
    """The cells where fastconv's best peer is slowest relative to PyTorch."""
    cells = [s for s in summary(doc) if s["best"] and s["best"]["ratio_torch"] is not None]
    return sorted(cells, key=lambda s: s["best"]["ratio_torch"])[:count]


def _sections(doc, markdown):
    parts = []
    for kind, title in SECTIONS:
        recs = [r for r in doc["results"] if r["kind"] == kind]
        if not recs:
            continue
        headers = _detail_headers(kind)
        right = {i for i, h in enumerate(headers) if h not in ("case", "pass", "peer", "note")}
        parts.append(("### " if markdown else "== ") + title + ("" if markdown else " =="))
        parts.append(_grid(headers, _detail_rows(recs, kind), markdown, right))
    parts.append(("### " if markdown else "== ") + "Summary" + ("" if markdown else " =="))
    parts.append(_grid(SUMMARY_HEADERS, _summary_rows(doc), markdown, right={2, 3, 4, 5, 6, 7}))
    behind = furthest_behind(doc)
    if behind:
        parts.append("Furthest behind PyTorch (best fastconv peer): " + "; ".join(
            f"{s['case']} {s['pass']} {_ratio(s['best']['ratio_torch'])}" for s in behind))
    return parts


def text(doc):
    return "\n".join(header_lines(doc)) + "\n\n" + "\n\n".join(_sections(doc, markdown=False))


def markdown(doc):
    head = "\n".join("- " + line for line in header_lines(doc))
    return head + "\n\n" + "\n\n".join(_sections(doc, markdown=True)) + "\n"


# ---------------------------------------------------------------- chart
def _cell_label(rec):
    return f"{rec['case']}\n{rec['pass'].replace('backward_', 'bwd_')}"


def plot(doc, path):
    """A PNG of each fastconv peer's speed ratio to PyTorch per case and pass (log scale): one
    panel for convolution layers (a bar per algorithm), one for pooling and the training step.
    Returns a one-line message saying what was written, or why nothing was."""
    try:
        plt = require_matplotlib()
        from matplotlib.ticker import FuncFormatter
    except ImportError as exc:
        return f"--plot {path}: {exc}; no chart written"
    ratios = {(_cell_label(r), r["peer"]): r["ratio_torch"] for r in doc["results"]
              if r["peer"] in FASTCONV_PEERS and r["ratio_torch"] is not None}
    panels = []
    for kinds, title in ((("conv",), "convolution layers"), (("pool", "step"), "pooling, training step")):
        cells = list(dict.fromkeys(_cell_label(r) for r in doc["results"] if r["kind"] in kinds))
        peers = [p for p in FASTCONV_PEERS if any((c, p) in ratios for c in cells)]
        if peers:
            panels.append((title, cells, peers))
    if not panels:
        return f"--plot {path}: no speed ratios to PyTorch (torch missing or nothing correct); no chart written"
    width_in = min(18.0, max(7.0, 0.45 * max(len(cells) for _, cells, _ in panels)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(width_in, 4.2 * len(panels)), squeeze=False)
    for ax, (title, cells, peers) in zip(axes[:, 0], panels):
        width = 0.8 / len(peers)
        for i, peer in enumerate(peers):
            xs = [j + (i - (len(peers) - 1) / 2) * width for j in range(len(cells))]
            ax.bar(xs, [ratios.get((c, peer), 0) for c in cells], width, label=peer)
        ax.axhline(1.0, color="black", linewidth=1)
        ax.set_yscale("log")
        shown = [v for (c, p), v in ratios.items() if c in cells and v > 0]
        low, high = min(shown + [1.0]) / 1.5, max(shown + [1.0]) * 1.5  # bars of any height fit
        ax.set_ylim(low, high)
        ax.set_yticks([t for t in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200)
                       if low <= t <= high])
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
        ax.set_ylabel("torch time / fastconv time")
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels(cells, rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(cells) - 0.4)
        ax.set_title(f"{title}: above 1x = fastconv faster than PyTorch", fontsize=9)
        ax.legend(fontsize=8, ncol=len(peers), loc="upper left")
        ax.grid(axis="y", which="both", alpha=0.3)
    m = doc["machine"]
    fig.suptitle(f"fastconv {m['fastconv']} vs PyTorch {m['torch']} on {m['cpu']}, "
                 f"{doc['settings']['threads']} threads (medians)", fontsize=10)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return f"chart written to {path}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                description="Re-render a saved benchmark JSON.")
    p.add_argument("json_path")
    p.add_argument("--markdown", metavar="PATH")
    p.add_argument("--plot", metavar="PATH")
    args = p.parse_args(argv)
    with open(args.json_path) as f:
        doc = json.load(f)
    print(text(doc))
    if args.markdown:
        with atomic_write(args.markdown, "w", encoding="utf-8") as f:
            f.write(markdown(doc))
    if args.plot:
        print(plot(doc, args.plot), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
