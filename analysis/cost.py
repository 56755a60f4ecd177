"""The compute a model of N parameters spends per training token, as the results table counts it.

Every answer (N*, D* at a budget C, a new grid's tokens) turns a budget into tokens through this one
model, D = C / c(N), so it spends C under the same FLOP convention the runs spent theirs. c(N) is
read off the table: each run's `flops_per_token` column, else its flops / tokens. For the small
models of EHR studies it is far from 6N (attention over the context and the logits over the
vocabulary dominate), and it depends on which parameter count N is (all, or non-embedding).

Between the table's sizes c(N) is interpolated linearly in log-log. Beyond them it continues the end
segment as a straight line in N, c(N) = c_end + s (N - N_end) with s the segment's dc/dN: a cost of
the form kN + m (6N plus terms that do not grow with N) is then exact, and for a Transformer, whose
attention and logit terms grow more slowly than N, it errs by a shrinking fraction (docs/analysis.md).
Where that line would not rise (one size, or a falling end segment), c(N) / N is held at the end's
value instead. A table with no FLOPs at all is C = 6ND, and says so.
"""

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True)
class CostModel:
    """c(N): training FLOPs per token of a model with N parameters (the fits' parameter count)."""

    log_n: tuple[float, ...]  # distinct sizes of the table, ascending
    log_c: tuple[float, ...]  # their FLOPs per token (median over runs of a size)
    source: str  # where the numbers came from
    assumed_6nd: bool = False

    @classmethod
    def six_n(cls) -> "CostModel":
        return cls(log_n=(), log_c=(), source="6 x params (C = 6ND assumed)", assumed_6nd=True)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, flops_from: str) -> tuple["CostModel", str]:
        """The table's c(N), and a note saying where it came from."""
        if "flops_per_token" in frame.columns:
            per_token, source = frame["flops_per_token"].to_numpy(), "the flops_per_token column"
        elif flops_from == "6 x params x tokens":
            model = cls.six_n()
            return model, "compute per token: C = 6ND assumed (the table has no FLOPs)"
        else:
            per_token, source = frame["flops"].to_numpy() / frame["tokens"].to_numpy(), f"{flops_from} / tokens"
        points = (
            pl.DataFrame({"n": frame["params"].to_numpy(), "c": per_token})
            .group_by("n")
            .agg(pl.col("c").median())
            .sort("n")
        )
        model = cls(
            log_n=tuple(np.log(points["n"].to_numpy())), log_c=tuple(np.log(points["c"].to_numpy())), source=source
        )
        ratio = np.exp(np.array(model.log_c) - np.array(model.log_n)) / 6
        note = (
            f"compute per token from {source}: {ratio[0]:.3g} x 6N at the smallest size, {ratio[-1]:.3g} x 6N at the "
            f"largest"
            if len(ratio) > 1
            else f"compute per token from {source}: {ratio[0]:.3g} x 6N"
        )
        return model, note

    def per_token(self, n):
        """FLOPs per token at N parameters (array or scalar)."""
        n = np.asarray(n, dtype=float)
        if self.assumed_6nd:
            return 6.0 * n
        x, y = np.asarray(self.log_n), np.asarray(self.log_c)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_n = np.log(n)
        inside = np.exp(np.interp(log_n, x, y))
        below = self._beyond(n, x[0], y[0], x[1:2], y[1:2])
        above = self._beyond(n, x[-1], y[-1], x[-2:-1], y[-2:-1])
        return np.where(log_n < x[0], below, np.where(log_n > x[-1], above, inside))

    @staticmethod
    def _beyond(n, x_end, y_end, x_next, y_next):
        """The end segment continued as a line in N (held ratio c/N where it would not rise, or stays positive)."""
        n_end, c_end = np.exp(x_end), np.exp(y_end)
        held = c_end * n / n_end
        if not len(x_next):
            return held
        slope = (np.exp(y_next[0]) - c_end) / (np.exp(x_next[0]) - n_end)
        with np.errstate(invalid="ignore"):
            line = c_end + slope * (n - n_end)
        return np.where((slope > 0) & (line > 0), line, held)

    def tokens(self, n, compute):
        """Tokens that spend `compute` at N parameters: D = C / c(N)."""
        return np.asarray(compute, dtype=float) / self.per_token(n)

    def as_dict(self) -> dict:
        return {
            "from": self.source,
            "assumed_6nd": self.assumed_6nd,
            "rule": "C = 6 N D"
            if self.assumed_6nd
            else "C = c(N) D, c interpolated in log-log between the table's sizes, continued linearly in N beyond them",
            "points": [[float(np.exp(a)), float(np.exp(b))] for a, b in zip(self.log_n, self.log_c)],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "CostModel":
        if data["assumed_6nd"]:
            return cls.six_n()
        points = np.asarray(data["points"], dtype=float).reshape(-1, 2)
        return cls(log_n=tuple(np.log(points[:, 0])), log_c=tuple(np.log(points[:, 1])), source=data["from"])
