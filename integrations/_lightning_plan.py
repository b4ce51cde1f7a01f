"""What ``ProbeCallback`` must do at each hook, as a pure function of the trainer's state.

``plan(hook, moment, policy)`` answers, without touching the trainer: measure now? wait for a
background measurement before monitors read? is this an epoch's end (for ``step="epoch"``)?
and at which of Lightning's epoch-metric steps are the values logged? ``ProbeCallback``
gathers the :class:`Moment` and :class:`Policy` from the trainer and executes the answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Hook = Literal["validation_start", "validation_epoch_end", "train_epoch_end", "fit_end", "fresh_report"]


@dataclass(frozen=True)
class Policy:
    """The callback's standing orders for this fit."""

    every_n_epochs: int
    background: bool
    monitored: bool  # a callback (EarlyStopping, ModelCheckpoint …) monitors a name this callback logs
    scheduler_reads: bool  # a ReduceLROnPlateau (interval "epoch") monitors one


@dataclass(frozen=True)
class Moment:
    """What the trainer's state says at a hook."""

    epoch: int
    fitting: bool  # trainer.fn is "fit" and this is not the sanity check
    measured_this_step: bool  # this optimizer step was measured already
    end_of_epoch_validation: bool  # this validation runs after the epoch's last training batch
    weights_swapped: bool = False  # fit end: StochasticWeightAveraging swapped in weights never measured


@dataclass(frozen=True)
class Step:
    """What to do: ``measure`` (or submit) now, ``wait`` for the background before monitors read,
    whether this is an ``epoch_end``, and whether the log step is the one ``on_train_epoch_end`` uses."""

    measure: bool
    wait: bool
    epoch_end: bool
    in_train_epoch_end: bool


def plan(hook: Hook, moment: Moment, policy: Policy) -> Step | None:
    """The step to execute at ``hook``, or ``None`` for nothing.

    >>> policy = Policy(every_n_epochs=2, background=False, monitored=False, scheduler_reads=False)
    >>> plan("train_epoch_end", Moment(epoch=0, fitting=True, measured_this_step=False, end_of_epoch_validation=False), policy)
    Step(measure=False, wait=False, epoch_end=True, in_train_epoch_end=True)
    >>> plan("train_epoch_end", Moment(epoch=1, fitting=True, measured_this_step=False, end_of_epoch_validation=False), policy)
    Step(measure=True, wait=False, epoch_end=True, in_train_epoch_end=True)
    """
    due = (moment.epoch + 1) % policy.every_n_epochs == 0
    fresh = not moment.measured_this_step
    if hook == "validation_start":
        if not moment.fitting:
            return None
        end = moment.end_of_epoch_validation
        wanted = (end and (due or policy.scheduler_reads)) or policy.monitored
        return Step(measure=wanted and fresh, wait=False, epoch_end=end, in_train_epoch_end=False)
    if hook == "validation_epoch_end":
        # background: the measurement started with this validation ran alongside it; monitors read next
        if not (moment.fitting and policy.background and moment.measured_this_step and policy.monitored):
            return None
        return Step(measure=False, wait=True, epoch_end=moment.end_of_epoch_validation, in_train_epoch_end=False)
    if hook == "train_epoch_end":
        monitored = policy.monitored or policy.scheduler_reads
        return Step(measure=(due or monitored) and fresh, wait=monitored, epoch_end=True, in_train_epoch_end=True)
    if hook == "fit_end":
        # StochasticWeightAveraging swapped the averaged weights in (on_train_end): those are the ones saved,
        # logged one step after the last epoch's measures; in background mode, the last measurements are
        # finished and shared with every rank, so all end the fit with the same last report
        if moment.weights_swapped or policy.background:
            return Step(measure=moment.weights_swapped, wait=True, epoch_end=True, in_train_epoch_end=False)
        return None
    # fresh_report: another callback's on_train_epoch_end wants the weights as they are now
    return Step(measure=fresh, wait=True, epoch_end=True, in_train_epoch_end=True)
