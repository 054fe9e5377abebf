"""MLflow logging happens only with an active run or an explicit tracking URI."""

from __future__ import annotations

from fgclip_core.eval.tracking import log_to_mlflow, mlflow_name


def test_metric_names_are_mlflow_safe():
    assert mlflow_name("eval", "coco-5k", "i2t_R@1") == "eval/coco-5k/i2t_R1"
    assert mlflow_name("eval", "fg ovd (hard)", "accuracy") == "eval/fg ovd hard/accuracy"


def test_no_run_and_no_uri_logs_nothing():
    assert log_to_mlflow({"eval/x/accuracy": 1.0}, []) is None
