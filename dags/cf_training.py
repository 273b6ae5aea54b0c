"""
### cf_training
Implicit ALS collaborative filtering on orders and events, with shadow evaluation, versioning and
rollback; then MySanta's user_similarities. Runs once per successful `user_affinity` (the
`nightshift.user_affinity` asset, i.e. daily) and emits `nightshift.cf_model`.

`train` fits on the history window minus the last `holdout_days` and scores NDCG/recall/
precision@k on what users bought in those days; the promoted model is scored on the same holdout.
The new version (factors .npy, id maps, metadata.json with checksums under
ARTIFACT_ROOT/models/cf_als/versions/) is promoted only when its NDCG@k is not worse than the
promoted one's by more than `tolerance`; otherwise it stays a candidate and the run log and
`cf:metadata:last_run` say why. `rollback_to=<version>` restores an earlier version (checksums
verified) without training. Retention keeps the last CF_KEEP_VERSIONS versions and everything
younger than CF_KEEP_DAYS days.
"""
from __future__ import annotations

from airflow.sdk import Param, dag, task

from include.jobs.assets import CF_MODEL, USER_AFFINITY
from include.jobs.dag_defaults import LONG_JOB_ARGS, START_DATE, run_date
from include.runtime.config import SOURCE_POOL


@dag(
    schedule=[USER_AFFINITY],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=LONG_JOB_ARGS,
    tags=["nightshift", "cf", "mysanta"],
    doc_md=__doc__,
    params={
        "as_of_date": Param(None, type=["null", "string"], format="date",
                            description="Train on data up to this date (YYYY-MM-DD); empty: the run's date."),
        "history_days": Param(None, type=["null", "integer"], minimum=2,
                              description="Days of orders and events to learn from; empty: CF_HISTORY_DAYS (365)."),
        "holdout_days": Param(None, type=["null", "integer"], minimum=1,
                              description="Last days held out for evaluation; empty: CF_HOLDOUT_DAYS (14)."),
        "min_interactions": Param(None, type=["null", "integer"], minimum=1,
                                  description="Users and items with fewer interactions are dropped; empty: "
                                              "CF_MIN_INTERACTIONS (5)."),
        "factors": Param(None, type=["null", "integer"], minimum=1, maximum=1024,
                         description="Latent factors; empty: CF_FACTORS (64)."),
        "regularization": Param(None, type=["null", "number"], minimum=0,
                                description="L2 regularisation; empty: CF_REGULARIZATION (0.05)."),
        "iterations": Param(None, type=["null", "integer"], minimum=1, maximum=200,
                            description="ALS sweeps; empty: CF_ITERATIONS (15)."),
        "alpha": Param(None, type=["null", "number"], minimum=0,
                       description="Confidence scale of the interactions; empty: CF_ALPHA (10)."),
        "k": Param(None, type=["null", "integer"], minimum=1, maximum=100,
                   description="Cut-off of NDCG/recall/precision; empty: CF_EVAL_K (10)."),
        "eval_users": Param(None, type=["null", "integer"], minimum=1,
                            description="Holdout users sampled for evaluation; empty: CF_EVAL_USERS (10000)."),
        "tolerance": Param(None, type=["null", "number"], minimum=0, maximum=0.99,
                           description="Relative NDCG drop still promoted; empty: CF_PROMOTION_TOLERANCE (0.02)."),
        "rollback_to": Param(None, type=["null", "string"],
                             description="Restore this version (e.g. 20241229T023000-1a2b3c4d) instead of training."),
        "force_promote": Param(False, type="boolean", description="Promote even when worse than the live model."),
        "shadow": Param(False, type="boolean",
                        description="Train and shadow-evaluate only, never promote (what a backfill runs)."),
        "random_state": Param(0, type="integer", minimum=0, description="Seed of the ALS initialisation."),
    },
)
def cf_training():
    @task
    def resolve_settings(**context) -> dict:
        import datetime as dt

        from include.jobs.cf_training import CFRun

        today = dt.datetime.now(dt.timezone.utc).date()
        return CFRun.from_params(context["params"], run_date(context), today).to_dict()

    @task(pool=SOURCE_POOL, inlets=[USER_AFFINITY])
    def train(run: dict) -> dict:
        from include.jobs import cf_training as job

        return job.train(job.CFRun.from_dict(run))

    @task
    def promote(run: dict, result: dict) -> dict:
        from include.jobs import cf_training as job

        return job.promote(job.CFRun.from_dict(run), result)

    @task
    def similarities(promotion: dict) -> dict:
        from include.jobs import cf_training as job

        return job.similarities()

    @task(outlets=[CF_MODEL])
    def publish(run: dict, result: dict, promotion: dict, similar: dict, **context) -> dict:
        from include.jobs import cf_training as job

        return job.publish(job.CFRun.from_dict(run), result, promotion, similar, context["dag_run"].start_date)

    run = resolve_settings()
    result = train(run)
    promotion = promote(run, result)
    publish(run, result, promotion, similarities(promotion))


cf_training()
