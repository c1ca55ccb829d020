"""The PNG chart of a benchmark record: tokens/s against context depth, a line per concurrency level
(generation on the left, prompt processing on the right)."""

from __future__ import annotations

from pathlib import Path

from pipeline.benchmark.results import Record


def write_png(record: Record, dest: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a Spark over SSH or in CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    panels = ((axes[0], "tg_tps", "generation (tg) t/s"), (axes[1], "pp_tps", "prompt processing (pp) t/s"))
    for ax, field, title in panels:
        for c in sorted({r.concurrency for r in record.rows}):
            pts = [
                (r.depth, getattr(r, field))
                for r in record.rows
                if r.concurrency == c and getattr(r, field) is not None
            ]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"concurrency {c}")
        ax.set_title(title)
        ax.set_xlabel("context depth (tokens)")
        ax.set_ylabel("tokens/s")
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    fig.suptitle(f"{record.model} — {record.label} — {record.profile}", fontsize=10)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    tmp.replace(dest)
    return dest
