"""`ehrscale data inspect`: a prepared dataset's statistics and one timeline, readable."""

import numpy as np
from rich.table import Table

from scaling.data.dataset import PreparedDataset
from scaling.data.meds_io import SPLITS
from scaling.data.timelines import Vocabulary


def describe(dataset: PreparedDataset) -> Table:
    """Counts per split: subjects, events, tokens, bags, and each task's size and positives."""
    m = dataset.manifest
    table = Table(title=f"{dataset.root} ({m['source']['kind']}: {m['source']['path']})")
    table.add_column("")
    for split in SPLITS:
        table.add_column(split, justify="right")
    table.add_row("subjects", *(f"{m['counts']['subjects_by_split'].get(s, 0):,}" for s in SPLITS))
    table.add_row("timeline tokens", *(f"{m['timelines'][s]['tokens']:,}" for s in SPLITS))
    table.add_row(
        "tokens per subject",
        *(f"{m['timelines'][s]['tokens'] / max(m['timelines'][s]['subjects'], 1):,.0f}" for s in SPLITS),
    )
    table.add_row("lab bags", *(f"{m['bags']['bags_by_split'][s]:,}" for s in SPLITS))
    for name, task in m["tasks"]["labels"].items():
        cells = []
        for s in SPLITS:
            c = task["by_split"].get(s, {"n": 0, "positives": 0})
            cells.append(f"{c['n']:,} ({c['positives'] / max(c['n'], 1):.1%} +)")
        table.add_row(f"task {name}", *cells)
    vocab = dataset.vocabulary().frame()
    kinds = vocab.group_by("kind").len().sort("kind")
    table.caption = (
        f"{m['counts']['events']:,} events, {m['counts']['codes']:,} codes; vocabulary {vocab.height:,} tokens ("
        + ", ".join(f"{k} {n}" for k, n in kinds.iter_rows())
        + f"); {m['bags']['items']} lab items in bags"
    )
    return table


def _render(tokens: list[int], dataset: PreparedDataset, vocab: Vocabulary) -> list[str]:
    """Tokens as lines: one event per line (code with its description, then its value tokens), gaps between."""
    descriptions = dict(dataset.codes().select("code", "description").iter_rows())
    lines, line = [], []
    for token in tokens:
        text, kind = vocab.tokens[token], vocab.kinds[token]
        if kind in ("code", "unknown", "age") and line:
            lines.append(" ".join(line))
            line = []
        if kind == "code":
            line.append(f"{text} ({descriptions.get(text, '')})" if descriptions.get(text) else text)
        elif kind == "interval":
            lines.append(" ".join(line)) if line else None
            line = []
            lines.append(f"  -- {text.removeprefix('TIME//')} later --")
        else:
            line.append(f"[{text}]")
    if line:
        lines.append(" ".join(line))
    return lines


def _check(dataset: PreparedDataset, split: str, index: int):
    if split not in SPLITS:
        raise ValueError(f"--split must be one of {', '.join(SPLITS)}")
    timelines = dataset.timelines(split)
    if index >= len(timelines):
        raise IndexError(f"--index {index}: the {split} split has {len(timelines)} subjects")
    return timelines


def decode_timeline(dataset: PreparedDataset, split: str, index: int, limit: int) -> str:
    """One subject's first tokens: time gaps, codes with descriptions, value tokens, one event per line."""
    tokens, _ = _check(dataset, split, index).subject(index)
    header = f"timeline of {split} subject #{index}: first {min(limit, len(tokens))} of {len(tokens):,} tokens"
    return header + "\n" + "\n".join(_render(np.asarray(tokens[:limit]).tolist(), dataset, dataset.vocabulary()))


def decode_icu_day(dataset: PreparedDataset, split: str, index: int, limit: int) -> str:
    """The first 24 h of an ICU stay, decoded: of the first subject from `index` on whose timeline has one."""
    timelines = _check(dataset, split, index)
    vocab = dataset.vocabulary()
    icu = np.array([t.startswith("ICU_ADMISSION//") for t in vocab.tokens])
    for subject in range(index, len(timelines)):
        tokens, times = timelines.subject(subject)
        starts = np.flatnonzero(icu[np.asarray(tokens, np.int64)])
        if len(starts):
            break
    else:
        raise ValueError(f"no {split} subject from #{index} on has an ICU stay (an ICU_ADMISSION token)")
    first = int(starts[0])
    day = np.flatnonzero((times >= times[first]) & (times < times[first] + 24 * 3600 * 10**6))
    day = day[day >= first]
    shown = day[:limit]
    header = f"the first 24 h of an ICU stay of {split} subject #{subject}: {len(day):,} tokens" + (
        f", the first {len(shown):,} shown" if len(shown) < len(day) else ""
    )
    return header + "\n" + "\n".join(_render(np.asarray(tokens)[shown].tolist(), dataset, vocab))
