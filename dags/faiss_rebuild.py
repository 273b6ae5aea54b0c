"""
### faiss_rebuild
The product-similarity FAISS index, rebuilt Sundays at 02:00; emits `nightshift.faiss_index`.

`build` embeds each product's name, category, brand and description (only new or changed texts:
the embedding cache is keyed by the text's hash), with a local sentence-transformers model when
one is installed (FAISS_EMBEDDING_MODEL or the package FAISS_EMBEDDING_PACKAGE, never
downloaded) and otherwise a deterministic TF-IDF + SVD embedder. The index is exact below
FAISS_EXACT_LIMIT (10,000) vectors and IVF above, nprobe tuned to `min_recall`; validation on
other sampled queries must reach recall@10 >= `min_recall` (0.95) against exact search, else the
run fails and the live index stays. `publish` swaps the pointer atomically
(ARTIFACT_ROOT/models/faiss_products/CURRENT.json), keeps the replaced index 24 hours and writes
`faiss:metadata:last_run`. `rollback_to=<version>` restores an earlier index.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.assets import FAISS_INDEX
from include.jobs.dag_defaults import LONG_JOB_ARGS, START_DATE
from include.runtime.config import SOURCE_POOL


@dag(
    schedule="0 2 * * 0",
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=LONG_JOB_ARGS,
    tags=["nightshift", "faiss", "similar-products"],
    doc_md=__doc__,
    params={
        "index_type": Param("auto", type="string", enum=["auto", "flat", "ivf", "hnsw"],
                            description="auto: exact below exact_limit vectors, IVF above."),
        "exact_limit": Param(None, type=["null", "integer"], minimum=1,
                             description="Vectors below which the index is exact; empty: FAISS_EXACT_LIMIT (10000)."),
        "min_recall": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                            description="Validation threshold of recall@10; empty: FAISS_MIN_RECALL (0.95)."),
        "validation_queries": Param(None, type=["null", "integer"], minimum=1,
                                    description="Sampled queries for tuning and for validation; empty: "
                                                "FAISS_VALIDATION_QUERIES (1000)."),
        "nprobe": Param(None, type=["null", "integer"], minimum=1,
                        description="Fix IVF nprobe instead of tuning it to min_recall."),
        "embedding_model": Param(None, type=["null", "string"],
                                 description="Local sentence-transformers model directory; empty: "
                                             "FAISS_EMBEDDING_MODEL, else the installed package, else TF-IDF + SVD."),
        "refit_embedder": Param(False, type="boolean",
                                description="Refit the TF-IDF + SVD fallback (invalidates the embedding cache)."),
        "rollback_to": Param(None, type=["null", "string"],
                             description="Restore this index version instead of building one."),
        "random_state": Param(0, type="integer", minimum=0, description="Seed of sampling and k-means."),
    },
)
def faiss_rebuild():
    @task
    def resolve_settings(**context) -> dict:
        from include.jobs.faiss_rebuild import FaissRun

        return FaissRun.from_params(context["params"]).to_dict()

    @task(pool=SOURCE_POOL)
    def build(run: dict) -> dict:
        from include.jobs import faiss_rebuild as job

        return job.build(job.FaissRun.from_dict(run))

    @task(outlets=[FAISS_INDEX])
    def publish(run: dict, result: dict, **context) -> dict:
        from include.jobs import faiss_rebuild as job

        return job.publish(job.FaissRun.from_dict(run), result, context["dag_run"].start_date)

    run = resolve_settings()
    publish(run, build(run))


faiss_rebuild()
