"""ProbeCallback's plan: what each hook must do, as a pure function of the trainer's state."""

from __future__ import annotations

import pytest

from integrations._lightning_plan import Moment, Policy, Step, plan


def _policy(**changes) -> Policy:
    return Policy(**{"every_n_epochs": 1, "background": False, "monitored": False, "scheduler_reads": False, **changes})


def _moment(**changes) -> Moment:
    return Moment(**{"epoch": 0, "fitting": True, "measured_this_step": False, "end_of_epoch_validation": True, **changes})


def test_without_monitors_the_epoch_end_measures_every_nth_epoch_and_never_waits():
    policy = _policy(every_n_epochs=3)
    measured = [plan("train_epoch_end", _moment(epoch=e), policy).measure for e in range(6)]  # type: ignore[union-attr]
    assert measured == [False, False, True, False, False, True]
    assert not plan("train_epoch_end", _moment(epoch=2), policy).wait  # type: ignore[union-attr]
    # an end-of-epoch validation measures first (the weights do not change during it), mid-epoch ones do not
    assert plan("validation_start", _moment(epoch=2), policy) == Step(True, False, True, False)
    assert plan("validation_start", _moment(epoch=2, end_of_epoch_validation=False), policy).measure is False  # type: ignore[union-attr]


def test_a_monitor_gets_a_fresh_value_wherever_it_may_read_and_each_step_is_measured_once():
    policy = _policy(every_n_epochs=5, monitored=True)
    mid_epoch = plan("validation_start", _moment(epoch=0, end_of_epoch_validation=False), policy)
    assert mid_epoch == Step(measure=True, wait=False, epoch_end=False, in_train_epoch_end=False)
    assert plan("train_epoch_end", _moment(epoch=0), policy) == Step(True, True, True, True)
    # already measured at this optimizer step (a validation just before): never twice
    assert plan("train_epoch_end", _moment(measured_this_step=True), policy).measure is False  # type: ignore[union-attr]
    assert plan("fresh_report", _moment(measured_this_step=True), policy) == Step(False, True, True, True)


def test_background_waits_at_validation_end_only_for_a_monitor_of_a_fresh_measurement():
    assert plan("validation_epoch_end", _moment(measured_this_step=True), _policy(background=True, monitored=True)) == \
        Step(measure=False, wait=True, epoch_end=True, in_train_epoch_end=False)
    for policy, moment in [(_policy(background=False, monitored=True), _moment(measured_this_step=True)),
                           (_policy(background=True, monitored=False), _moment(measured_this_step=True)),
                           (_policy(background=True, monitored=True), _moment(measured_this_step=False))]:
        assert plan("validation_epoch_end", moment, policy) is None


def test_a_plateau_scheduler_reads_at_epoch_ends_so_those_are_measured_and_waited_for():
    policy = _policy(every_n_epochs=2, scheduler_reads=True)
    assert plan("train_epoch_end", _moment(epoch=0), policy) == Step(True, True, True, True)
    assert plan("validation_start", _moment(epoch=0), policy).measure is True  # type: ignore[union-attr]
    assert plan("validation_start", _moment(epoch=0, end_of_epoch_validation=False), policy).measure is False  # type: ignore[union-attr]


@pytest.mark.parametrize("hook", ["validation_start", "validation_epoch_end"])
def test_sanity_checks_validate_and_test_do_nothing(hook):
    assert plan(hook, _moment(fitting=False, measured_this_step=True), _policy(background=True, monitored=True)) is None


def test_fit_end_measures_only_weights_swapped_in_unmeasured_and_background_finishes_for_every_rank():
    assert plan("fit_end", _moment(), _policy()) is None
    assert plan("fit_end", _moment(weights_swapped=True), _policy()) == Step(True, True, True, False)
    assert plan("fit_end", _moment(), _policy(background=True)) == Step(False, True, True, False)
