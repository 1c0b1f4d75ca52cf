"""The walkthroughs' example data: deterministic, with gaps, and a learnable target."""

from __future__ import annotations

import pandas as pd

from mlflow_pipeline.cli.commands import example_data_main
from mlflow_pipeline.data.examples import customers


def test_customers_is_deterministic_and_has_gaps():
    frame = customers(600, seed=3)
    pd.testing.assert_frame_equal(frame, customers(600, seed=3))
    assert list(frame.columns) == ["income", "age", "plan", "label"]
    assert frame[["income", "age", "plan"]].isna().sum().tolist() == [60, 30, 50]
    assert set(frame["plan"].dropna()) == {"basic", "plus", "premium"}
    assert 0.2 < frame["label"].mean() < 0.8
    assert not customers(600, seed=4).equals(frame)


def test_example_data_command_writes_the_csv(tmp_path, capsys):
    path = tmp_path / "data" / "customers.csv"
    assert example_data_main([str(path), "--rows", "200", "--seed", "1"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(path), customers(200, seed=1), check_dtype=False)
    assert capsys.readouterr().out == f"wrote 200 rows (income, age, plan, label) to {path}\n"
