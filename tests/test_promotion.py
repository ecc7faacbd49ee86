"""Promotion decides against the version active NOW, and never activates a model whose files are gone."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa

from binaudit import db
from jobs.cli import main
from modeling import promotion, registry
from modeling.promotion import Comparison, Scores, compare_with_active, promote
from tests.modeling_fixtures import tiny_model
from tests.test_jobs_support import make_local


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_dataset, tmp_path_factory):
    return tiny_model(tiny_dataset, tmp_path_factory)


@pytest.fixture
def ctx(tmp_path, monkeypatch, tiny_model_dir, tiny_dataset, database_url):
    """Three versions of the same model (equal scores), none active; `val` is the folder to compare on;
    on SQLite and on PostgreSQL."""
    ctx = make_local(tmp_path, monkeypatch, database_url)
    ctx.a, ctx.b, ctx.c = (registry.register_model(ctx.engine, tiny_model_dir, ctx.workspace.models_dir, actor="ana")
                           for _ in range(3))
    ctx.val = tiny_dataset / "val"
    return ctx


def _audit(engine, version) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(db.audit_log.c.action).where(db.audit_log.c.entity_id == str(version.id))
                                 .order_by(db.audit_log.c.id)).scalars())


def _active(ctx) -> int | None:
    active = registry.active_version(ctx.engine)
    return active.id if active else None


def test_a_comparison_about_another_candidate_is_not_trusted(ctx):
    promote(ctx.engine, ctx.a.id, actor="ana")
    about_c = Comparison(str(ctx.val), Scores(ctx.c.id, ctx.c.name, 0.10, 3.0, 13), Scores(ctx.a.id, ctx.a.name,
                                                                                          0.90, 0.2, 13))
    result = promote(ctx.engine, ctx.b.id, actor="ana", val_dir=ctx.val, comparison=about_c)
    # evaluated again: b against a, equal models, and a tie goes to the candidate
    assert result.comparison.candidate.version_id == ctx.b.id and result.comparison.active_id == ctx.a.id
    assert result.promoted and _active(ctx) == ctx.b.id


def test_a_comparison_against_a_version_no_longer_active_is_evaluated_again(ctx):
    promote(ctx.engine, ctx.a.id, actor="ana")
    # the dashboard compared b with a; then someone activated c; then the Promote button is pressed
    stale = Comparison(str(ctx.val), Scores(ctx.b.id, ctx.b.name, 0.90, 0.2, 13), Scores(ctx.a.id, ctx.a.name,
                                                                                         0.10, 3.0, 13))
    registry.activate(ctx.engine, ctx.c.id, actor="bo")
    result = promote(ctx.engine, ctx.b.id, actor="ana", comparison=stale)
    assert result.previous.id == ctx.c.id
    assert result.comparison is not stale and result.comparison.active_id == ctx.c.id
    assert f"vs active {ctx.c.name}" in result.reason


def test_an_activation_during_the_evaluation_is_decided_against_not_overwritten(ctx, monkeypatch):
    promote(ctx.engine, ctx.a.id, actor="ana")
    real_score = promotion.score_version
    calls = []

    def score_while_bo_activates_c(version, *args, **kwargs):
        calls.append(version.id)
        if len(calls) == 1:  # another user activates c while this promotion evaluates b against a
            registry.activate(ctx.engine, ctx.c.id, actor="bo")
        return real_score(version, *args, **kwargs)

    monkeypatch.setattr(promotion, "score_version", score_while_bo_activates_c)
    result = promote(ctx.engine, ctx.b.id, actor="ana", val_dir=ctx.val)
    assert calls == [ctx.b.id, ctx.a.id, ctx.b.id, ctx.c.id]  # decided again, against c
    assert result.previous.id == ctx.c.id and result.comparison.active_id == ctx.c.id
    assert result.promoted and _active(ctx) == ctx.b.id


def test_activation_is_conditional_on_the_version_decided_against(ctx):
    registry.activate(ctx.engine, ctx.a.id)
    with pytest.raises(registry.ActiveVersionChanged):
        registry.activate(ctx.engine, ctx.b.id, expected_active=ctx.c.id)
    with pytest.raises(registry.ActiveVersionChanged):
        registry.activate(ctx.engine, ctx.b.id, expected_active=None)
    assert _active(ctx) == ctx.a.id
    assert registry.activate(ctx.engine, ctx.b.id, expected_active=ctx.a.id).active


def test_a_first_model_whose_files_are_gone_is_refused(ctx):
    shutil.rmtree(ctx.a.model_dir)
    result = promote(ctx.engine, ctx.a.id, actor="ana")
    assert not result.promoted and "model files are gone" in result.reason and "model.pth" in result.reason
    assert _active(ctx) is None and "promotion_refused" in _audit(ctx.engine, ctx.a)


def test_an_active_version_whose_files_are_gone_is_replaced_only_when_forced(ctx):
    promote(ctx.engine, ctx.a.id, actor="ana")
    shutil.rmtree(ctx.a.model_dir)

    refused = promote(ctx.engine, ctx.b.id, actor="ana", val_dir=ctx.val)
    assert not refused.promoted and _active(ctx) == ctx.a.id
    assert f"active {ctx.a.name}, which could not be scored" in refused.reason and "--force" in refused.reason

    # the dashboard's path: compare (no error), then promote with that comparison and Force ticked
    comparison = compare_with_active(ctx.engine, ctx.b.id, ctx.val)
    assert comparison.active.error and comparison.active.version_id == ctx.a.id
    forced = promote(ctx.engine, ctx.b.id, actor="ana", force=True, comparison=comparison)
    assert forced.promoted and forced.comparison is comparison and _active(ctx) == ctx.b.id
    assert "forced" in forced.reason and "could not be scored" in forced.reason


def test_the_cli_exits_2_when_a_promotion_is_refused(ctx, monkeypatch, capsys):
    monkeypatch.setenv("BINAUDIT_WORKSPACE", str(ctx.workspace.root))
    monkeypatch.setenv("BINAUDIT_SECRETS", str(ctx.workspace.root / "no-secrets.toml"))
    monkeypatch.delenv("BINAUDIT_BACKEND", raising=False)
    shutil.rmtree(ctx.a.model_dir)
    assert main(["models", "promote", ctx.a.name]) == 2
    assert "model files are gone" in capsys.readouterr().err
