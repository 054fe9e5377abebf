"""Declarative automation of the model side (evaluated by Dagster's automation condition sensor).

``trained_model`` retrains on a tick of the retrain cron when new training shards landed since it was
last requested (no retrain without new data; data landing between ticks waits for the next tick);
a tick while an upstream or the model itself is still running is skipped. ``evaluation`` and ``registered_model`` follow the model they
evaluate/register (not a new benchmark or base checkpoint alone, which would re-register the same model).
"""

from __future__ import annotations

from dagster import AssetSelection, AutomationCondition

from orchestration import settings


def _idle() -> AutomationCondition:
    return ~AutomationCondition.any_deps_in_progress() & ~AutomationCondition.in_progress()


def retrain_condition(cron: str | None = None) -> AutomationCondition:
    cron = cron or settings.retrain_cron()
    new_shards = AutomationCondition.any_deps_updated().allow(AssetSelection.assets("training_shards"))
    # the tick itself (not "a tick since"): shards landing between ticks wait for the next tick
    return (AutomationCondition.cron_tick_passed(cron)
            & new_shards.since_last_handled()
            & _idle()).with_label(f"retrain on {cron} when new shards landed")


def follows(parent: str) -> AutomationCondition:
    """Run after ``parent`` updated (or will update in the same tick), once per update."""
    return (AutomationCondition.any_deps_updated().allow(AssetSelection.assets(parent)).since_last_handled()
            & ~AutomationCondition.in_progress()).with_label(f"after {parent}")
